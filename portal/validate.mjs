// Validates an AsyncAPI document with the official parser (the AsyncAPI 3.0 JSON schema and
// the spec's rules): exits 1 on any error, printing each; warnings are printed too.
import { readFileSync } from "node:fs";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate.mjs ASYNCAPI_FILE");
  process.exit(2);
}
const { document, diagnostics } = await new Parser().parse(readFileSync(path, "utf8"));
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
for (const d of diagnostics) {
  const level = d.severity === DiagnosticSeverity.Error ? "error" : "warning";
  console.error(`${level}: ${d.message} at /${d.path.join("/")}`);
}
if (errors.length > 0 || !document) {
  console.error(`${path}: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()}, ${document.allMessages().length} messages, ${document.channels().length} channels`);
