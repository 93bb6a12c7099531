// Fetch the prebuilt OHIF viewer (the `dist/` shipped in the npm tarball of @ohif/app) into
// ./ohif-dist. Only the tarball is used, never its dependencies: installing @ohif/app as a
// dependency would pull its whole build toolchain. `npm pack` goes through the npm client
// (registry, proxy and cache settings apply) and the tarball is checked against the sha512
// pinned in package.json before it is unpacked.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { ohif } = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'));
const dest = join(here, 'ohif-dist');
const stamp = join(dest, '.ohif-version');
const want = `${ohif.package}@${ohif.version} ${ohif.integrity}`;

if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want) {
  console.log(`ohif-dist already holds ${ohif.package}@${ohif.version}`);
  process.exit(0);
}

const work = mkdtempSync(join(tmpdir(), 'ohif-fetch-'));
try {
  const out = execFileSync('npm', ['pack', '--silent', `${ohif.package}@${ohif.version}`], {
    cwd: work,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const tgz = join(work, out.trim().split('\n').pop());
  const got = 'sha512-' + createHash('sha512').update(readFileSync(tgz)).digest('base64');
  if (got !== ohif.integrity) {
    throw new Error(`${tgz}: integrity ${got} does not match the pinned ${ohif.integrity}`);
  }
  // ort/ (ONNX runtime, 136 MB) and dicom-microscopy-viewer/ are only loaded by the
  // segmentation-AI and microscopy modes, which the test does not open.
  execFileSync('tar', ['xzf', tgz, '-C', work, '--exclude=package/dist/ort', '--exclude=package/dist/dicom-microscopy-viewer', 'package/dist'], {
    stdio: 'inherit',
  });
  rmSync(dest, { recursive: true, force: true });
  mkdirSync(dirname(dest), { recursive: true });
  renameSync(join(work, 'package', 'dist'), dest);
  writeFileSync(stamp, want);
  console.log(`unpacked ${ohif.package}@${ohif.version} dist/ into ${dest}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
