// Draws the ```mermaid fences, which pymdownx.superfences leaves as <div class="mermaid">.
// The library is loaded by the reader's browser, never by the build (`make docs` works
// offline). Without a network the graph stays as its text, and the page shows the same trie
// as `e2b-matrix plan` prints it beside it.
import mermaid from "https://cdn.jsdelivr.net/npm/mermaid@12.4.0/dist/mermaid.esm.min.mjs";

mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
await mermaid.run({ querySelector: "div.mermaid" });
