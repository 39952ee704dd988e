'use strict';
// The VS Code side of the .mtl language: starts `mtl lsp` over stdio for .mtl files and
// restarts it on request or when its settings change. Diagnostics, hover, completion,
// formatting and the rest are the server's (docs/editors.md); nothing is registered here
// for them. Bundled by esbuild into dist/extension.js (build.sh).

const vscode = require('vscode');
const { LanguageClient, State } = require('vscode-languageclient/node');
const { COMMAND_SETTING, missingServerMessage, resolveServer } = require('./server');

const SELECTOR = [{ scheme: 'file', language: 'mtl' }, { scheme: 'untitled', language: 'mtl' }];

/** @type {LanguageClient | undefined} */
let client;
/** @type {vscode.LogOutputChannel} */
let output;
/** @type {vscode.LanguageStatusItem} */
let status;

/**
 * The server's settings, read afresh at every start so a change takes effect on restart.
 * @returns {{command: string[], args: string[]}}
 */
function readSettings() {
  const config = vscode.workspace.getConfiguration('mtl.server');
  return { command: config.get('command', []), args: config.get('args', []) };
}

/**
 * Show the server's state next to the language mode of an .mtl file.
 * @param {string} text
 * @param {vscode.LanguageStatusSeverity} severity
 * @param {string} [detail]
 */
function showStatus(text, severity, detail) {
  status.text = text;
  status.severity = severity;
  status.detail = detail ?? '';
}

/**
 * Tell the user the server could not start, with the two ways out: install it, or point
 * the setting at it.
 * @param {string} [reason]
 */
async function reportMissing(reason) {
  const message = missingServerMessage(reason);
  output.error(message);
  showStatus('mtl lsp: not running', vscode.LanguageStatusSeverity.Error, message);
  const choice = await vscode.window.showWarningMessage(message, 'Open Settings', 'Show Output');
  if (choice === 'Open Settings') {
    await vscode.commands.executeCommand('workbench.action.openSettings', COMMAND_SETTING);
  } else if (choice === 'Show Output') {
    output.show();
  }
}

/** Start the server with the command the settings and the workspace give. */
async function startClient() {
  const folders = (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath);
  const server = resolveServer({ settings: readSettings(), folders,
    trusted: vscode.workspace.isTrusted });
  if ('error' in server) {
    await reportMissing(server.error);
    return;
  }
  output.info(`Starting ${[server.command, ...server.args].join(' ')} (from ${server.source})`);
  showStatus('mtl lsp: starting', vscode.LanguageStatusSeverity.Information);
  status.busy = true;
  // No `transport` on purpose: with TransportKind.stdio the client would append --stdio.
  const serverOptions = { command: server.command, args: server.args,
    options: { cwd: folders[0] } };
  client = new LanguageClient('mtl', 'MTL Language Server', serverOptions, {
    documentSelector: SELECTOR,
    outputChannel: output,
  });
  client.onDidChangeState(({ newState }) => {
    status.busy = newState === State.Starting;
    if (newState === State.Running) {
      showStatus('mtl lsp', vscode.LanguageStatusSeverity.Information,
        `${server.command} (from ${server.source})`);
    } else if (newState === State.Stopped) {
      showStatus('mtl lsp: stopped', vscode.LanguageStatusSeverity.Warning);
    }
  });
  try {
    await client.start();
  } catch (err) {
    client = undefined;
    status.busy = false;
    await reportMissing(`${server.command} failed to start (${err instanceof Error ? err.message : err})`);
  }
}

/** Stop the running server, if any. */
async function stopClient() {
  const running = client;
  client = undefined;
  if (running && running.state !== State.Stopped) {
    await running.stop();
  }
}

/** Restart: the command "MTL: Restart Language Server", a settings change, granted trust. */
async function restartClient() {
  await stopClient();
  await startClient();
}

/** @param {vscode.ExtensionContext} context */
async function activate(context) {
  output = vscode.window.createOutputChannel('MTL', { log: true });
  status = vscode.languages.createLanguageStatusItem('mtl.server', SELECTOR);
  status.name = 'MTL Language Server';
  status.command = { title: 'Show Output', command: 'mtl.showOutput' };
  context.subscriptions.push(
    output,
    status,
    vscode.commands.registerCommand('mtl.restartServer', restartClient),
    vscode.commands.registerCommand('mtl.showOutput', () => output.show()),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration('mtl.server')) {
        restartClient();
      }
    }),
    vscode.workspace.onDidGrantWorkspaceTrust(restartClient),
  );
  await startClient();
}

/** @returns {Promise<void>} */
function deactivate() {
  return stopClient();
}

module.exports = { activate, deactivate };
