// What every twindisk command shares on the command line: commander's settings (errors as one
// "twindisk: ..." line and exit code 2, a pointer to --help) and the parsers that check numbers and
// sizes as they are read, so `--poll-us abc` is refused before anything runs.
import { Command, InvalidArgumentError } from 'commander';
import { ConfigError, parseSize } from '../engine/replication/config.js';

/**
 * A command with twindisk's settings. Subcommands made with `.command()` inherit them; call
 * `finishHelp(program)` once every command is declared.
 */
export function newProgram(name: string): Command {
  return new Command(name)
    // Errors throw (CommanderError) instead of exiting, so that main() gives them exit code 2.
    .exitOverride()
    .configureOutput({ outputError: (message, write) => write(message.replace(/^error: /, 'twindisk: ')) })
    .showSuggestionAfterError(true)
    .helpCommand('help [command]', 'show the help of a command');
}

/** After a command's usage error: where its help is. */
export function finishHelp(cmd: Command, parents = ''): void {
  const name = `${parents}${cmd.name()}`;
  cmd.showHelpAfterError(`(see \`${name} --help\`)`);
  for (const sub of cmd.commands) finishHelp(sub, `${name} `);
}

/** A parser for a whole number min..max (digits only: "1e3", "0x10", "" and "abc" are refused). */
export function countArg(min: number, max: number, what = `a whole number ${min}..${max}`): (value: string) => number {
  return (value) => {
    const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
    if (!(n >= min && n <= max)) throw new InvalidArgumentError(`expected ${what}.`);
    return n;
  };
}

/** A parser for a number of seconds above 0 ("2", "0.5"). */
export function secondsArg(value: string): number {
  const n = /^[0-9]+(\.[0-9]+)?$/.test(value) ? Number(value) : NaN;
  if (!(n > 0)) throw new InvalidArgumentError('expected a number of seconds above 0.');
  return n;
}

/** A parser for a size in bytes: the resource file's parser (4096, 512K, 100M, 1G, 2T). */
export function sizeArg(value: string): number {
  try {
    return parseSize(value);
  } catch (e) {
    if (e instanceof ConfigError) throw new InvalidArgumentError(e.errors[0]!);
    throw e;
  }
}
