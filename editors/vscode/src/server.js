'use strict';
// Which command starts the mtl language server. A pure function of the settings, the
// workspace folders and the file system, kept apart from the VS Code glue (extension.js) so
// that tests/test_editor_vscode.py can run it under plain node.

const fs = require('fs');
const path = require('path');

const INSTALL_HINT = "pip install 'mtl-dsl[lsp]'";
const COMMAND_SETTING = 'mtl.server.command';
const VENVS = ['.venv', 'venv'];

/**
 * The `mtl` executables a workspace folder's virtual environments may hold, in the order
 * they are tried (`.venv` before `venv`).
 * @param {string} folder
 * @param {string} platform  process.platform
 * @returns {string[]}
 */
function venvCandidates(folder, platform) {
  const p = platform === 'win32' ? path.win32 : path.posix;
  return VENVS.map((venv) => (platform === 'win32'
    ? p.join(folder, venv, 'Scripts', 'mtl.exe')
    : p.join(folder, venv, 'bin', 'mtl')));
}

/**
 * Whether `file` is a file this process may run; a broken link or a folder is not.
 * @param {string} file
 * @returns {boolean}
 */
function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/**
 * `name` looked up on PATH the way a shell would (with PATHEXT's extensions on Windows), so
 * that a missing server is reported before anything is spawned.
 * @param {string} name
 * @param {Record<string, string | undefined>} env
 * @param {string} platform
 * @param {(file: string) => boolean} exists
 * @returns {string | undefined}
 */
function onPath(name, env, platform, exists) {
  const p = platform === 'win32' ? path.win32 : path.posix;
  const pathVar = env.PATH ?? env.Path ?? '';
  const exts = platform === 'win32' ? (env.PATHEXT || '.EXE;.CMD;.BAT').split(';') : [''];
  for (const dir of pathVar.split(p.delimiter).filter(Boolean)) {
    for (const ext of exts) {
      const file = p.join(dir, name + ext.toLowerCase());
      if (exists(file)) {
        return file;
      }
    }
  }
  return undefined;
}

/**
 * Where a program named in the setting is: a path (relative ones against the workspace
 * folders) must be an executable file; a bare name is looked up on PATH.
 * @param {string} program
 * @param {string[]} folders
 * @param {Record<string, string | undefined>} env
 * @param {string} platform
 * @param {(file: string) => boolean} exists
 * @returns {string | undefined}
 */
function findProgram(program, folders, env, platform, exists) {
  const p = platform === 'win32' ? path.win32 : path.posix;
  if (!program.includes('/') && !(platform === 'win32' && program.includes('\\'))) {
    return onPath(program, env, platform, exists);
  }
  const candidates = p.isAbsolute(program) ? [program] : folders.map((f) => p.join(f, program));
  return candidates.find((file) => exists(file));
}

/**
 * The server's command line, or why there is none. Order: the setting `mtl.server.command`;
 * `mtl` in a workspace folder's `.venv` or `venv` (only in a trusted workspace: a folder's
 * files are not run before the user trusts it); `mtl` on PATH. `mtl.server.args` is appended
 * in every case. A program that is not there is reported here rather than left to fail at
 * spawn, so the user gets one message that says what to do.
 * @param {{settings: {command?: string[], args?: string[]}, folders: string[], trusted: boolean,
 *          platform?: string, env?: Record<string, string | undefined>,
 *          exists?: (file: string) => boolean}} where
 * @returns {{command: string, args: string[], source: string} | {error: string}}
 */
function resolveServer({ settings, folders, trusted, platform = process.platform,
  env = process.env, exists = isExecutable }) {
  const extra = settings.args ?? [];
  const configured = (settings.command ?? []).filter((part) => part !== '');
  if (configured.length > 0) {
    const program = findProgram(configured[0], folders, env, platform, exists);
    if (!program) {
      return { error: `The setting ${COMMAND_SETTING} names ${configured[0]}, which is not an ` +
        'executable file' };
    }
    return { command: program, args: [...configured.slice(1), ...extra],
      source: `the setting ${COMMAND_SETTING}` };
  }
  if (trusted) {
    for (const folder of folders) {
      const found = venvCandidates(folder, platform).find((file) => exists(file));
      if (found) {
        return { command: found, args: ['lsp', ...extra], source: 'the workspace\'s virtual environment' };
      }
    }
  }
  const found = onPath('mtl', env, platform, exists);
  if (!found) {
    const where = trusted ? 'in the workspace\'s .venv or venv, nor on PATH' : 'on PATH';
    return { error: `No mtl command was found ${where}` };
  }
  return { command: found, args: ['lsp', ...extra], source: 'PATH' };
}

/**
 * What to tell the user when no server can be started: how to install one and which
 * setting names it.
 * @param {string} [reason]
 * @returns {string}
 */
function missingServerMessage(reason) {
  const why = reason ? `${reason}. ` : '';
  return `${why}The mtl language server did not start: install it with ${INSTALL_HINT} ` +
    `(in the workspace's .venv, or anywhere on PATH), or set ${COMMAND_SETTING} to its ` +
    'command, e.g. ["/path/to/.venv/bin/mtl", "lsp"].';
}

module.exports = { INSTALL_HINT, COMMAND_SETTING, venvCandidates, onPath, findProgram, resolveServer,
  missingServerMessage };
