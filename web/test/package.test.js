'use strict';
// The package's own files: client.d.ts type-checks code written each way
// client.js is used, refuses wrong calls, and declares what client.js has;
// npm packs the three files. The module forms run against a real node in
// web/module_test.go and web/module_browser_test.go.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { promisify } = require('node:util');

const ROOT = path.resolve(__dirname, '..');
const TYPES = path.join(__dirname, 'types');
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');
const run = promisify(execFile);

const STRICT = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022,dom'];
const NODE16 = ['--module', 'node16', '--moduleResolution', 'node16'];
const BUNDLER = ['--module', 'esnext', '--moduleResolution', 'bundler'];

// tsc runs the compiler on one file; it resolves to its exit code and
// what it printed.
async function tsc(file, flags) {
  try {
    const { stdout, stderr } = await run(process.execPath, [TSC, ...STRICT, ...flags, path.join(TYPES, file)], { cwd: ROOT });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    if (typeof err.code !== 'number') throw err;
    return { code: err.code, out: err.stdout + err.stderr };
  }
}

describe('client.d.ts', { concurrency: true }, () => {
  for (const [name, file, flags] of [
    ['an ES module in Node.js', 'esm.mts', NODE16],
    ['an ES module in a bundler', 'esm.mts', BUNDLER],
    ['a CommonJS module', 'cjs.cts', NODE16],
    ['a plain script, with the global Switchboard', 'script.ts', []],
  ]) {
    it(`type-checks ${name} (test/types/${file})`, async () => {
      const { code, out } = await tsc(file, flags);
      assert.equal(code, 0, `tsc found errors in test/types/${file} against client.d.ts:\n${out}`);
    });
  }

  it('refuses wrong calls, each with its error (test/types/wrong.ts)', async () => {
    const want = [];
    fs.readFileSync(path.join(TYPES, 'wrong.ts'), 'utf8').split('\n').forEach((line, i) => {
      const m = / \/\/ (TS\d+)$/.exec(line);
      if (m) want.push(`${i + 1} ${m[1]}`);
    });
    assert.ok(want.length >= 5, 'wrong.ts marks its wrong calls');
    const { code, out } = await tsc('wrong.ts', NODE16);
    assert.notEqual(code, 0, 'tsc accepted test/types/wrong.ts');
    const got = [...out.matchAll(/^test\/types\/wrong\.ts\((\d+),\d+\): error (TS\d+)/gm)].map((m) => `${m[1]} ${m[2]}`);
    assert.deepEqual(got, want, `tsc's errors (line and code) differ from the marks in wrong.ts:\n${out}`);
  });

  it('declares what client.js has, and nothing else', () => {
    const ts = require('typescript');
    const file = path.join(ROOT, 'client.d.ts');
    const program = ts.createProgram([file], { strict: true, noEmit: true, types: [] });
    const checker = program.getTypeChecker();
    const mod = checker.getSymbolAtLocation(program.getSourceFile(file));
    const ns = checker.getExportsOfModule(mod);
    const values = ns.filter((s) => s.flags & ts.SymbolFlags.Value).map((s) => s.name).sort();
    const Switchboard = require('..');
    assert.deepEqual(values, Object.keys(Switchboard).sort(), 'the values of the Switchboard namespace');

    const cls = ns.find((s) => s.name === 'Client');
    const members = checker.getDeclaredTypeOfSymbol(cls).getProperties().map((s) => s.name).sort();
    const source = fs.readFileSync(path.join(ROOT, 'client.js'), 'utf8');
    const fields = [...new Set([...source.matchAll(/\bthis\.([a-z]\w*) = /g)].map((m) => m[1]))];
    const methods = Object.getOwnPropertyNames(Switchboard.Client.prototype).filter((n) => n !== 'constructor' && !n.startsWith('_'));
    assert.deepEqual(members, [...fields, ...methods].sort(), 'the members of Client');
  });
});

describe('the package', () => {
  it('packs client.js, client.mjs and client.d.ts', async () => {
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json'], { cwd: ROOT });
    const [info] = JSON.parse(stdout);
    const files = info.files.map((f) => f.path).sort();
    assert.deepEqual(files, ['README.md', 'client.d.ts', 'client.js', 'client.mjs', 'package.json']);
  });

  it('points every entry of package.json at a packed file', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    const entries = [pkg.main, pkg.module, pkg.types, ...Object.values(pkg.exports['.'])];
    for (const e of entries) {
      assert.ok(pkg.files.includes(path.normalize(e)), `${e} is not in "files"`);
      assert.ok(fs.existsSync(path.join(ROOT, e)), `${e} does not exist`);
    }
  });
});
