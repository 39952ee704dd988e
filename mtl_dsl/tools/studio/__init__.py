"""`mtl studio`: a live local web page to write a spec, see its model and watch it train
(docs/studio.md). `server` starts it; `routes` is its HTTP interface behind `guard` (the token,
loopback, the body limit, paths kept inside the folder); `files` reads and saves the folder's
specs; `documents` answers the editor from the analysis core; `page` fills in index.html;
`jobs` runs `mtl compile --train`; `runs` and `compare_view` read the runs folder. The page
itself is `static/` (studio.js, studio.css, and editor.js, the CodeMirror bundle built from
editors/studio-web/). Starlette and uvicorn come with the extra `mtl-dsl[studio]`."""
