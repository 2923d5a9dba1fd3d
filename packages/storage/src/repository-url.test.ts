import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PgfleetError } from '@pgfleet/core';
import {
  parseRepositoryUrl,
  repositoriesFromSettings,
  repositoryUrl,
  type RepositorySettings,
  type RepositorySpec,
} from './repository-url.js';

test('posix repositories: a plain absolute path or posix:/path, normalised', () => {
  assert.deepEqual(parseRepositoryUrl('/srv/pgfleet/repo/'), { case: 'posix', value: { path: '/srv/pgfleet/repo' } });
  assert.deepEqual(parseRepositoryUrl('posix:/srv/./repo'), { case: 'posix', value: { path: '/srv/repo' } });
  assert.deepEqual(parseRepositoryUrl('posix:///srv/repo'), { case: 'posix', value: { path: '/srv/repo' } });
  assert.equal(repositoryUrl(parseRepositoryUrl('posix:/srv/repo')), '/srv/repo');
});

test('S3 repositories: bucket, prefix, endpoint, region and path style', () => {
  const spec = parseRepositoryUrl(
    's3://pgfleet-backups/prod/eu?endpoint=http://127.0.0.1:9000&region=eu-west-1&path-style=true',
  );
  assert.deepEqual(spec, {
    case: 's3',
    value: {
      bucket: 'pgfleet-backups',
      prefix: 'prod/eu',
      endpoint: 'http://127.0.0.1:9000',
      region: 'eu-west-1',
      forcePathStyle: true,
    },
  });
  assert.equal(
    repositoryUrl(spec),
    's3://pgfleet-backups/prod/eu?endpoint=http://127.0.0.1:9000&region=eu-west-1&path-style=true',
  );
  assert.deepEqual(parseRepositoryUrl('s3://bucket'), {
    case: 's3',
    value: { bucket: 'bucket', prefix: '', endpoint: '', region: '', forcePathStyle: false },
  });
  assert.equal(repositoryUrl(parseRepositoryUrl('s3://bucket/')), 's3://bucket');
  // An encoded endpoint parses the same, and the canonical form round-trips.
  const encoded = parseRepositoryUrl('s3://b-1/x?path-style=1&endpoint=https%3A%2F%2Fminio.local%3A9000%2F');
  assert.deepEqual(encoded.value, {
    bucket: 'b-1',
    prefix: 'x',
    endpoint: 'https://minio.local:9000',
    region: '',
    forcePathStyle: true,
  });
  for (const s of [spec, encoded] as RepositorySpec[]) assert.deepEqual(parseRepositoryUrl(repositoryUrl(s)), s);
});

test('bad URLs fail with InvalidConfig naming the option', () => {
  const cases: [string, RegExp][] = [
    ['relative/repo', /not an absolute path/],
    ['posix:relative', /not an absolute path/],
    ['', /is empty/],
    ['ftp://host/x', /unsupported scheme 'ftp'/],
    ['s3://Bad_Bucket/x', /not a valid S3 bucket name/],
    ['s3://bucket:9000/x', /put the server in \?endpoint=/],
    ['s3://bucket/x?endpoint=127.0.0.1:9000', /not an http\(s\) URL/],
    ['s3://bucket/x?regoin=us-east-1', /unknown parameter 'regoin'/],
    ['s3://bucket/x?path-style=yes', /path-style='yes'/],
    ['s3://bucket/a//b', /invalid prefix/],
  ];
  for (const [url, why] of cases) {
    assert.throws(
      () => parseRepositoryUrl(url, 'repo2'),
      (e: unknown) => PgfleetError.is(e, 'InvalidConfig') && /option 'repo2'/.test(e.message) && why.test(e.message),
      url,
    );
  }
});

test('credentials in a URL are refused and never echoed', () => {
  assert.throws(
    () => parseRepositoryUrl('s3://AKIAEXAMPLE:s3cr3t@bucket/x'),
    (e: unknown) =>
      PgfleetError.is(e, 'InvalidConfig') &&
      /credentials do not belong/.test(e.message) &&
      !e.message.includes('s3cr3t') &&
      /--s3-access-key-id/.test(e.hint),
  );
});

test('repositoriesFromSettings: --repo or its posix shorthand --repo-path, then --repo2', () => {
  assert.deepEqual(repositoriesFromSettings({}), []);
  assert.deepEqual(repositoriesFromSettings({ repoPath: '/srv/repo' }), [
    { case: 'posix', value: { path: '/srv/repo' } },
  ]);
  const two = repositoriesFromSettings({ repo: '/srv/repo', repo2: 's3://offsite/c1?region=eu-west-1' });
  assert.deepEqual(two.map(repositoryUrl), ['/srv/repo', 's3://offsite/c1?region=eu-west-1']);
  const refused: [RepositorySettings, RegExp][] = [
    [{ repoPath: 'repo' }, /option 'repo-path': 'repo' is not an absolute path/],
    [{ repoPath: 's3://b/x' }, /option 'repo-path'.*not an absolute path/],
    [{ repo: '/a', repoPath: '/a' }, /set one of them/],
    [{ repo2: '/b' }, /'repo2' needs 'repo'/],
    [{ repo: '/a/', repo2: 'posix:/a' }, /the same repository \(\/a\)/],
  ];
  for (const [values, why] of refused)
    assert.throws(
      () => repositoriesFromSettings(values),
      (e: unknown) => PgfleetError.is(e, 'InvalidConfig') && why.test(e.message),
      JSON.stringify(values),
    );
});
