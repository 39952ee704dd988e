// mtl studio's editor: CodeMirror 6 with the spec's colours, diagnostics pushed by the page,
// and hover and completion asked of the server (docs/studio.md). Built by build.sh into
// mtl_dsl/tools/studio/static/editor.js as `window.MtlEditor`; the page (studio.js) works
// without it, on a textarea. Positions to and from the server are 1-based lines and columns
// in characters (Unicode code points); CodeMirror counts UTF-16 code units, converted here.
import { EditorState } from '@codemirror/state';
import { EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
         drawSelection, hoverTooltip } from '@codemirror/view';
import { defaultKeymap, history, historyKeymap, indentWithTab } from '@codemirror/commands';
import { StreamLanguage, syntaxHighlighting, defaultHighlightStyle, bracketMatching } from '@codemirror/language';
import { setDiagnostics, lintGutter } from '@codemirror/lint';
import { autocompletion, closeBrackets, closeBracketsKeymap, completionKeymap } from '@codemirror/autocomplete';

// A character column (1-based, code points) on a line, as an offset in the document.
function offsetOf(doc, line, column) {
  const row = doc.line(Math.max(1, Math.min(line, doc.lines)));
  let units = 0;
  let seen = 1;
  for (const ch of row.text) {
    if (seen >= column) break;
    units += ch.length;
    seen += 1;
  }
  return row.from + units;
}

// An offset as (line, column in code points), as the server counts.
function positionOf(doc, pos) {
  const row = doc.lineAt(pos);
  return { line: row.number, column: [...row.text.slice(0, pos - row.from)].length + 1 };
}

// The spec's colours: keywords and kinds come from the server (the registry), so this list
// is never a copy of the language's own.
function mtlLanguage(words) {
  const keywords = new Set(words.keywords || []);
  const kinds = new Set(words.kinds || []);
  return StreamLanguage.define({
    name: 'mtl',
    token(stream) {
      if (stream.eatSpace()) return null;
      if (stream.match('#')) { stream.skipToEnd(); return 'comment'; }
      if (stream.match(/^"(?:[^"\\]|\\.)*"?/)) return 'string';
      if (stream.match(/^-?\d[\d_]*(\.\d+)?(e[+-]?\d+)?/i)) return 'number';
      const word = stream.match(/^[A-Za-z_][\w.]*/);
      if (word) {
        const text = word[0];
        if (stream.peek() === '=' && !stream.string.startsWith('==', stream.pos)) return 'propertyName';
        if (keywords.has(text) && stream.start === stream.indentation()) return 'keyword';
        if (kinds.has(text)) return 'typeName';
        if (['over', 'from', 'true', 'false', 'none'].includes(text)) return 'atom';
        return 'variableName';
      }
      stream.next();
      return 'operator';
    },
    languageData: { commentTokens: { line: '#' }, closeBrackets: { brackets: ['(', '[', '"'] } },
  });
}

// Hover Markdown as the language server writes it: **bold**, `code`, lists, line breaks.
function markdown(text) {
  const node = document.createElement('div');
  node.className = 'tooltip-md';
  const escape = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  node.innerHTML = escape(text)
    .replace(/`([^`]+)`/g, '<code>$1</code>')
    .replace(/\*\*([^*]+)\*\*/g, '<strong>$1</strong>')
    .replace(/^---$/gm, '<hr>')
    .replace(/^- /gm, '• ')
    .replace(/\n/g, '<br>');
  return node;
}

function hover(ask) {
  return hoverTooltip(async (view, pos) => {
    const at = positionOf(view.state.doc, pos);
    const text = await ask(view.state.doc.toString(), at.line, at.column);
    if (!text) return null;
    return { pos, above: true, create: () => ({ dom: markdown(text) }) };
  }, { hoverTime: 250 });
}

const ITEM_TYPES = { keyword: 'keyword', function: 'function', property: 'property', enummember: 'enum',
                     value: 'constant', field: 'variable', constant: 'constant', variable: 'variable',
                     class: 'class', interface: 'interface', struct: 'type', method: 'method' };

function completion(ask) {
  return async (context) => {
    const word = context.matchBefore(/[A-Za-z_][\w.]*/);
    if (!context.explicit && !word && !/[=(,\s]$/.test(context.state.sliceDoc(Math.max(0, context.pos - 1), context.pos))) return null;
    const at = positionOf(context.state.doc, context.pos);
    const found = await ask(context.state.doc.toString(), at.line, at.column);
    if (!found || !found.items.length) return null;
    return {
      from: offsetOf(context.state.doc, at.line, found.start),
      options: found.items.map((item) => ({
        label: item.label, apply: item.insert, detail: item.detail || undefined,
        type: ITEM_TYPES[item.kind] || 'text',
        info: item.info ? () => markdown(item.info) : undefined })),
      validFor: /^[\w.]*$/,
    };
  };
}

export function create(options) {
  const { parent, doc, language, onChange, onSave } = options;
  const extensions = [
    lineNumbers(), lintGutter(), highlightActiveLineGutter(), history(), drawSelection(),
    highlightActiveLine(), bracketMatching(), closeBrackets(),
    mtlLanguage(language || {}), syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    keymap.of([{ key: 'Mod-s', preventDefault: true, run: () => { onSave(); return true; } },
               ...closeBracketsKeymap, ...defaultKeymap, ...historyKeymap, ...completionKeymap, indentWithTab]),
    EditorView.updateListener.of((update) => { if (update.docChanged) onChange(update.state.doc.toString()); }),
    EditorView.lineWrapping,
  ];
  if (options.hover) extensions.push(hover(options.hover));
  if (options.complete) extensions.push(autocompletion({ override: [completion(options.complete)], activateOnTyping: true }));
  const view = new EditorView({ state: EditorState.create({ doc, extensions }), parent });
  return {
    kind: 'codemirror',
    view,
    getText: () => view.state.doc.toString(),
    setText: (text) => view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } }),
    focus: () => view.focus(),
    setDiagnostics(diagnostics) {
      const d = view.state.doc;
      const marks = diagnostics.filter((x) => x.span).map((x) => {
        const from = offsetOf(d, x.span.line, x.span.column);
        const to = Math.max(from, offsetOf(d, x.span.end_line, x.span.end_column));
        return { from, to: to === from ? Math.min(d.length, from + 1) : to, severity: x.severity,
                 source: x.code, message: x.message + (x.hint ? `\n= help: ${x.hint}` : '') };
      });
      view.dispatch(setDiagnostics(view.state, marks));
    },
    selectLines(first, last) {
      const d = view.state.doc;
      const from = d.line(Math.max(1, Math.min(first, d.lines))).from;
      const to = d.line(Math.max(1, Math.min(last || first, d.lines))).to;
      view.dispatch({ selection: { anchor: from, head: to }, scrollIntoView: true });
      view.focus();
    },
  };
}
