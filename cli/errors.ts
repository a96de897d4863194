// The CLI's exit codes and the errors that carry them, the same for every command.
import { CommanderError } from 'commander';
import { BackendError } from '../engine/backend.js';
import { DiskLockError } from '../engine/disk-lock.js';
import { ConfigError } from '../engine/replication/config.js';
import { MetadataError } from '../engine/replication/metadata.js';

/** The command worked. */
export const EXIT_OK = 0;
/** The command was well formed but failed at run time: node not running, disk in use, no metadata, I/O. */
export const EXIT_FAILURE = 1;
/** The command line or the resource file is wrong: unknown command or option, missing argument, invalid config. */
export const EXIT_USAGE = 2;

/** The rule, as `twindisk --help` and the README state it. */
export const EXIT_CODES_HELP = `Exit status: 0 success; 1 the command failed at run time (node not running, disk in use,
  missing metadata, I/O error); 2 the command line or the resource file is wrong (unknown command or
  option, missing argument, invalid resource file).`;

/** The command line is wrong: printed without a stack trace, exit code 2. */
export class UsageError extends Error {}

/** A run-time failure the user can act on: printed without a stack trace, exit code 1. */
export class CommandError extends Error {}

/**
 * Errors printed as one line (no stack trace), with the exit code each gets. commander's own errors
 * (unknown command or option, missing or invalid argument) are usage errors; its --help exits 0.
 */
export function exitCodeFor(e: unknown): { code: number; plain: boolean } {
  if (e instanceof CommanderError) return { code: e.exitCode === 0 ? EXIT_OK : EXIT_USAGE, plain: true };
  if (e instanceof UsageError || e instanceof ConfigError) return { code: EXIT_USAGE, plain: true };
  if (e instanceof CommandError || e instanceof MetadataError || e instanceof DiskLockError || e instanceof BackendError) {
    return { code: EXIT_FAILURE, plain: true };
  }
  return { code: EXIT_FAILURE, plain: false };
}
