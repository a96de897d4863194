// `twindisk bootimg disk`: builds the test disk a diskless client boots over iSCSI (bootimg/bootdisk.ts).
import path from 'node:path';
import { Option, type Command } from 'commander';
import { DEFAULT_MARK_SECTOR, DISK_SECTORS, FREE_AREA_START, buildBootDisk } from '../bootimg/bootdisk.js';
import { countArg } from './args.js';
import { CommandError, UsageError } from './errors.js';

/** Adds `bootimg disk` to the program. */
export function addBootimgCommands(program: Command): void {
  const bootimg = program.command('bootimg')
    .summary('build images for testing diskless boot')
    .description('Build images for testing diskless boot over iSCSI.');
  bootimg.command('disk')
    .summary('build a 64 MiB disk that iPXE sanboots and whose Linux logs back in to it over iSCSI')
    .description('Build a 64 MiB raw disk: an MBR, an active FAT partition with SYSLINUX, the Debian kernel and an '
      + 'initramfs that reads the iBFT, logs in to the same iSCSI disk with `iscsistart -b`, writes a marker after the '
      + 'partition, reads it back and powers off. Serve it over iSCSI and sanboot it (see `twindisk ipxe`). It is built '
      + 'once and kept in build/guest/ under a hash of its inputs; --out gets a copy.')
    .option('--out <file>', 'where to write the image (required; replaced if it exists)')
    .addOption(new Option('--mark-sector <n>', `the sector the guest writes its marker to (${FREE_AREA_START}..${DISK_SECTORS - 1})`)
      .argParser(countArg(FREE_AREA_START, DISK_SECTORS - 1)).default(DEFAULT_MARK_SECTOR))
    .action(async (o: { out?: string; markSector: number }) => {
      if (!o.out) throw new UsageError('bootimg disk needs --out FILE (where to write the image)');
      let d;
      try {
        d = await buildBootDisk({ out: path.resolve(o.out), markSector: o.markSector, log: (l) => process.stderr.write(`${l}\n`) });
      } catch (e) {
        throw new CommandError(`bootimg disk: ${(e as Error).message}`);
      }
      process.stdout.write(`${d.image}: boots over iSCSI, then writes ${d.mark.length} bytes ("${d.mark.toString('latin1')}") at sector ${d.markSector}\n`);
    });
}
