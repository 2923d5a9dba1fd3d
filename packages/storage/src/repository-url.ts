/**
 * Repository specs written as URLs, the one syntax every option, config file and message uses:
 *
 *   /abs/path  or  posix:/abs/path                      a directory (posix driver)
 *   s3://bucket[/prefix][?endpoint=URL&region=R&path-style=true|false]   an S3 bucket
 *
 * A spec has the shape of the protobuf oneof `Repository.kind` (common.proto): `{ kind: spec }`
 * is a Repository message and a received Repository's `kind` (when set) is a spec, so neither
 * side needs a conversion. Credentials never appear in a URL or a spec: they come from the
 * process's own configuration or the AWS default chain.
 *
 * This module loads no driver code (wal-push's client imports it through
 * '@pgfleet/storage/repository-url'); open-repository.ts opens drivers from specs.
 */
import { isAbsolute, normalize } from 'node:path';
import { PgfleetError } from '@pgfleet/core/errors';

export interface PosixRepositorySpec {
  path: string;
}

/** '' and false mean "not set" (proto3 defaults): the SDK's own resolution applies. */
export interface S3RepositorySpec {
  bucket: string;
  /** '' or 'a/b' (no leading or trailing '/') */
  prefix: string;
  endpoint: string;
  region: string;
  forcePathStyle: boolean;
}

export type RepositorySpec = { case: 'posix'; value: PosixRepositorySpec } | { case: 's3'; value: S3RepositorySpec };

/** Static S3 credentials; absent, the AWS default chain (environment, profile, instance role) applies. */
export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

const FORMS = 'an absolute path, posix:/abs/path or s3://bucket/prefix?endpoint=URL&region=R&path-style=true';
const S3_PARAMS = ['endpoint', 'region', 'path-style'];
// S3's bucket naming rules (3-63 of lowercase letters, digits, '.', '-'), loosely: what a URL host can carry.
const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/**
 * Parses a repository URL. `option` names where it came from (e.g. 'repo2'), so a bad value
 * fails with InvalidConfig (PGF-1002) naming the option.
 */
export function parseRepositoryUrl(url: string, option = 'repo'): RepositorySpec {
  const bad = (why: string) =>
    new PgfleetError('InvalidConfig', `option '${option}': '${redactUrl(url)}' ${why}; a repository is ${FORMS}`);
  const text = url.trim();
  if (text === '') throw bad('is empty');
  if (text.startsWith('/') || text.startsWith('posix:')) {
    const path = text.startsWith('posix:') ? text.slice('posix:'.length) : text;
    // posix:///abs is accepted too (the file: URL habit).
    const abs = path.startsWith('//') ? path.replace(/^\/+/, '/') : path;
    if (!isAbsolute(abs)) throw bad('is not an absolute path');
    return { case: 'posix', value: { path: stripTrailingSlash(normalize(abs)) } };
  }
  if (!/^s3:\/\//i.test(text)) {
    if (!/^[a-z][a-z0-9+.-]*:/i.test(text)) throw bad('is not an absolute path');
    throw bad(`has an unsupported scheme '${text.slice(0, text.indexOf(':'))}'`);
  }
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw bad('is not a valid URL');
  }
  if (u.username || u.password) {
    throw new PgfleetError(
      'InvalidConfig',
      `option '${option}': credentials do not belong in a repository URL ('${redactUrl(url)}')`,
      {
        hint: 'Set --s3-access-key-id and --s3-secret-access-key (or the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment variables) instead.',
      },
    );
  }
  if (u.port) throw bad('has a port after the bucket name; put the server in ?endpoint=');
  const bucket = u.hostname;
  if (!BUCKET_RE.test(bucket)) throw bad(`names bucket '${bucket}', which is not a valid S3 bucket name`);
  if (u.hash) throw bad('has a #fragment');
  const prefix = decodeURIComponent(u.pathname).replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((p) => p === '.' || p === '..') || prefix.includes('//'))
    throw bad(`has an invalid prefix '${prefix}'`);
  for (const key of u.searchParams.keys()) {
    if (!S3_PARAMS.includes(key)) throw bad(`has an unknown parameter '${key}' (known: ${S3_PARAMS.join(', ')})`);
  }
  const endpoint = u.searchParams.get('endpoint') ?? '';
  if (endpoint !== '') {
    let e: URL | undefined;
    try {
      e = new URL(endpoint);
    } catch {
      e = undefined;
    }
    if (!e || (e.protocol !== 'http:' && e.protocol !== 'https:'))
      throw bad(`has endpoint '${endpoint}', which is not an http(s) URL`);
  }
  const style = u.searchParams.get('path-style');
  if (style !== null && !/^(true|false|1|0)$/.test(style)) throw bad(`has path-style='${style}' (use true or false)`);
  return {
    case: 's3',
    value: {
      bucket,
      prefix,
      endpoint: stripTrailingSlash(endpoint),
      region: u.searchParams.get('region') ?? '',
      forcePathStyle: style === 'true' || style === '1',
    },
  };
}

function stripTrailingSlash(s: string): string {
  return s.length > 1 && s.endsWith('/') ? s.replace(/\/+$/, '') : s;
}

/** Hides anything that looks like credentials in a URL echoed back in an error. */
function redactUrl(url: string): string {
  return url.replace(/^([a-z0-9+.-]+:\/\/)[^/@]*@/i, '$1[redacted]@');
}

/**
 * The canonical URL of a spec: what messages and logs show, and what two configurations are
 * compared by (parseRepositoryUrl(repositoryUrl(s)) equals s). Never holds a secret.
 */
export function repositoryUrl(spec: RepositorySpec): string {
  if (spec.case === 'posix') return spec.value.path;
  const s = spec.value;
  // Readable rather than fully escaped (endpoint=http://host:9000): ':' and '/' are legal in a query.
  const param = (v: string) => encodeURIComponent(v).replace(/%3A/gi, ':').replace(/%2F/gi, '/');
  const query = [
    ...(s.endpoint ? [`endpoint=${param(s.endpoint)}`] : []),
    ...(s.region ? [`region=${param(s.region)}`] : []),
    ...(s.forcePathStyle ? ['path-style=true'] : []),
  ].join('&');
  const prefix = s.prefix.split('/').map(encodeURIComponent).join('/');
  return `s3://${s.bucket}${s.prefix ? `/${prefix}` : ''}${query ? `?${query}` : ''}`;
}

/** The repository options of a program's settings (--repo, --repo-path, --repo2), as resolved from its option table. */
export interface RepositorySettings {
  readonly repo?: string | undefined;
  readonly repoPath?: string | undefined;
  readonly repo2?: string | undefined;
}

/**
 * The repositories a program's settings name, in restore preference order: --repo (or its posix
 * shorthand --repo-path), then --repo2. Empty when none is set. Bad values fail with
 * InvalidConfig (PGF-1002) naming the option; an empty value counts as not set.
 */
export function repositoriesFromSettings(settings: RepositorySettings): RepositorySpec[] {
  // '' is "not set", as for environment variables: a flag `--repo2 ''` clears a config file's repo2.
  const value = (v: string | undefined) => (v === '' ? undefined : v);
  const repo = value(settings.repo);
  const repoPath = value(settings.repoPath);
  const repo2 = value(settings.repo2);
  if (repo !== undefined && repoPath !== undefined)
    throw new PgfleetError(
      'InvalidConfig',
      "options 'repo' and 'repo-path' both name the first repository: set one of them",
    );
  const out: RepositorySpec[] = [];
  if (repoPath !== undefined) {
    // Agents on other hosts resolve a path themselves: a relative one would mean something else on each.
    if (!isAbsolute(repoPath))
      throw new PgfleetError('InvalidConfig', `option 'repo-path': '${repoPath}' is not an absolute path`);
    out.push(parseRepositoryUrl(repoPath, 'repo-path'));
  } else if (repo !== undefined) {
    out.push(parseRepositoryUrl(repo, 'repo'));
  }
  if (repo2 !== undefined) {
    if (out.length === 0)
      throw new PgfleetError(
        'InvalidConfig',
        "option 'repo2' needs 'repo': the second repository comes after the first",
      );
    const second = parseRepositoryUrl(repo2, 'repo2');
    if (repositoryUrl(second) === repositoryUrl(out[0]!))
      throw new PgfleetError(
        'InvalidConfig',
        `options 'repo' and 'repo2' name the same repository (${repositoryUrl(second)})`,
      );
    out.push(second);
  }
  return out;
}
