// The QEMU command-line options that attach a twindisk vhost-user-blk disk.
import path from 'node:path';

/** The QEMU options that attach a vhost-user-blk disk served on `socket`. */
export function qemuAttachArgs(socket: string, queues: number, memory = '1G'): string[] {
  return [
    '-object', `memory-backend-memfd,id=mem,size=${memory},share=on`,
    '-machine', 'q35,memory-backend=mem',
    '-chardev', `socket,id=twindisk0,path=${path.resolve(socket)}`,
    '-device', `vhost-user-blk-pci,chardev=twindisk0,num-queues=${queues}`,
  ];
}

