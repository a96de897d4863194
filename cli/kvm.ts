// Whether this machine can run a guest under KVM: /dev/kvm opens read-write, speaks the stable API
// and lets this process create a VM (containers and nested setups often fail the last step).
import fs from 'node:fs';
import koffi from 'koffi';

/** `KVM_GET_API_VERSION` = _IO(0xAE, 0x00): answers 12 on every kernel since 2.6.22. */
const KVM_GET_API_VERSION = 0xae00;
/** `KVM_CREATE_VM` = _IO(0xAE, 0x01): returns a VM fd. */
const KVM_CREATE_VM = 0xae01;
const KVM_API_VERSION = 12;

let ioctl: ((fd: number, request: number, arg: number) => number) | null = null;

/** Why KVM is not usable here, or null when it is. `device` is for tests. */
export function kvmProblem(device = '/dev/kvm'): string | null {
  let fd: number;
  try {
    fd = fs.openSync(device, 'r+');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `${device} does not exist (no KVM in this kernel or container, or the kvm module is not loaded)`;
    if (code === 'EACCES' || code === 'EPERM') return `${device} is not read-write for this user (add the user to the kvm group)`;
    return `cannot open ${device}: ${(e as Error).message}`;
  }
  try {
    ioctl ??= koffi.load('libc.so.6').func('int ioctl(int fd, unsigned long request, unsigned long arg)') as (fd: number, request: number, arg: number) => number;
    const version = ioctl(fd, KVM_GET_API_VERSION, 0);
    if (version < 0) return `${device} is not a KVM device (KVM_GET_API_VERSION fails)`;
    if (version !== KVM_API_VERSION) return `${device} answers KVM API version ${version}, not ${KVM_API_VERSION}`;
    const vm = ioctl(fd, KVM_CREATE_VM, 0);
    if (vm < 0) return `${device} opens but creating a VM fails (nested virtualisation off, or a container without KVM rights)`;
    fs.closeSync(vm);
    return null;
  } finally {
    fs.closeSync(fd);
  }
}
