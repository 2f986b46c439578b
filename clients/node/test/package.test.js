'use strict';
// The package's own files: the .proto it ships is the repository's, its
// TypeScript declarations compile and describe the API, and npm packs
// what it needs.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { promisify } = require('node:util');

const ROOT = path.resolve(__dirname, '..');
const run = promisify(execFile);

describe('the package', () => {
  it('ships the repository\'s switchboard.proto unchanged', () => {
    const shipped = fs.readFileSync(path.join(ROOT, 'proto/switchboard/v1/switchboard.proto'), 'utf8');
    const source = fs.readFileSync(path.join(ROOT, '../../proto/switchboard/v1/switchboard.proto'), 'utf8');
    assert.ok(shipped === source, 'clients/node/proto is out of date: run `make generate`, which copies proto/ into it');
  });

  it('has TypeScript declarations that compile and match the API', async () => {
    const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
    try {
      await run(process.execPath, [tsc, '--noEmit', '--strict', '--module', 'node16', '--moduleResolution', 'node16',
        '--target', 'es2022', '--types', 'node', path.join(__dirname, 'types.ts')], { cwd: ROOT });
    } catch (err) {
      assert.fail(`tsc found errors in test/types.ts against index.d.ts:\n${err.stdout}${err.stderr}`);
    }
    // Every export of index.js is declared, and the other way round.
    const declared = [...fs.readFileSync(path.join(ROOT, 'index.d.ts'), 'utf8')
      .matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]).sort();
    assert.deepEqual(declared, Object.keys(require('..')).sort());
  });

  it('packs its code, declarations and .proto', async () => {
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json'], { cwd: ROOT });
    const [info] = JSON.parse(stdout);
    const files = info.files.map((f) => f.path).sort();
    assert.deepEqual(files, ['README.md', 'index.d.ts', 'index.js', 'package.json', 'proto/switchboard/v1/switchboard.proto']);
  });
});
