'use strict';
// Activate the bundled extension against a stand-in for the `vscode` module, outside VS Code,
// and print as JSON what it did: the commands it registered, its log lines, the messages it
// showed, the texts of its status item. tests/test_editor_vscode.py drives it:
//
//   node tests/activate.js dist/extension.js '{"settings": {...}, "folders": [...],
//                                             "trusted": true, "restart": false, "path": "..."}'
//
// `path`, when given, replaces PATH, where the extension looks for `mtl` last.
//
// The stand-in implements what the extension and vscode-languageclient call while starting
// and stopping a server; any other function of a namespace returns a disposable, and any
// other class is an empty one.

const Module = require('module');

const [bundle, whereJson] = process.argv.slice(2);
const where = JSON.parse(whereJson || '{}');
if (where.path !== undefined) {
  process.env.PATH = where.path;
}
const log = [];
const handlers = {};
const disposable = { dispose() {} };

/** A namespace whose unknown functions return a disposable (event registrations, mostly). */
function namespace(real) {
  return new Proxy(real, { get: (t, k) => (k in t ? t[k] : () => disposable) });
}

class EventEmitter {
  constructor() {
    this.listeners = [];
    this.event = (listener) => {
      this.listeners.push(listener);
      return disposable;
    };
  }

  fire(value) {
    this.listeners.forEach((listener) => listener(value));
  }

  dispose() {}
}

const message = (kind) => async (text, ...items) => {
  log.push([kind, text, items]);
  return undefined;
};

const vscode = new Proxy({
  version: '1.91.0',
  env: { language: 'en', appName: 'stand-in', machineId: 'stand-in', uiKind: 1 },
  EventEmitter,
  Disposable: class {
    static from() {
      return disposable;
    }

    dispose() {}
  },
  LanguageStatusSeverity: { Information: 0, Warning: 1, Error: 2 },
  workspace: namespace({
    workspaceFolders: (where.folders ?? []).map((fsPath) => ({ uri: { fsPath } })),
    isTrusted: where.trusted ?? true,
    textDocuments: [],
    getConfiguration: (section) => ({
      get: (key, fallback) => (where.settings ?? {})[`${section}.${key}`] ?? fallback,
    }),
  }),
  window: namespace({
    createOutputChannel: () => namespace({
      info: (line) => log.push(['log', line]),
      error: (line) => log.push(['log', line]),
    }),
    showWarningMessage: message('warning'),
    showErrorMessage: message('error'),
    showInformationMessage: message('information'),
  }),
  languages: namespace({
    createLanguageStatusItem: () => new Proxy({ dispose() {} }, {
      set: (t, k, v) => {
        if (k === 'text') {
          log.push(['status', v]);
        }
        t[k] = v;
        return true;
      },
    }),
  }),
  commands: namespace({
    registerCommand: (id, handler) => {
      handlers[id] = handler;
      log.push(['command', id]);
      return disposable;
    },
    executeCommand: async () => undefined,
  }),
  extensions: namespace({ all: [] }),
}, { get: (t, k) => (k in t ? t[k] : class {}) });

const load = Module._load;
Module._load = function loadWithStandIn(request, ...rest) {
  return request === 'vscode' ? vscode : load.call(this, request, ...rest);
};

/** Activate, restart if asked, deactivate; print the log whatever happened. */
async function main() {
  const extension = require(require('path').resolve(bundle));
  try {
    await extension.activate({ subscriptions: [] });
    if (where.restart) {
      await handlers['mtl.restartServer']();
    }
    await extension.deactivate();
  } catch (err) {
    log.push(['exception', String(err)]);
  }
  process.stdout.write(JSON.stringify(log));
}

main();
