/**
 * The agent's identity towards the controller: which channel credentials its Connect stream uses.
 *
 *  - neither --tls-dir nor --ca-cert: plain text, only with --insecure (a lab controller run with
 *    --insecure); without it the agent refuses to start rather than talk to whoever answers;
 *  - --ca-cert only: TLS that verifies the controller, without a client certificate (a controller
 *    with --tls-dir refuses such an agent with PGF-8001);
 *  - --tls-dir: mutual TLS with agent.crt/agent.key from that directory. On the first start the
 *    directory holds none: the agent makes a key (it never leaves this host), sends a certificate
 *    request with the one-time --enroll-token to EnrollmentService, and stores what comes back.
 *    Later starts use the stored files; the token is not needed again.
 *
 * The token is only ever sent over TLS verified against --ca-cert: sent to an impostor it could
 * be used to enroll in the agent's place.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PgfleetError, sleep, type Logger } from '@pgfleet/core';
import { EnrollmentService } from '@pgfleet/proto';
import {
  agentIdentityFromSubjectAltName,
  clientTlsCredentials,
  createClient,
  insecureCredentials,
  writePemFile,
  type ClientOptions,
} from '@pgfleet/rpc/client';
import type { AgentSettings } from '../options.js';
import { controllerAddresses, reconnectDelayMs } from '../controllers.js';

export const AGENT_TLS_FILES = { cert: 'agent.crt', key: 'agent.key', ca: 'ca.crt' } as const;

type Credentials = NonNullable<ClientOptions['credentials']>;
const RENEW_WARNING_MS = 30 * 86_400_000;

async function readText(path: string, option: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new PgfleetError('InvalidConfig', `option '${option}': cannot read ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

/** Channel credentials for the controller, enrolling first when --tls-dir holds no certificate yet. */
export async function agentCredentials(
  s: AgentSettings,
  log: Logger,
  stopped: () => boolean = () => false,
): Promise<Credentials> {
  if (!s.tlsDir) {
    return s.caCert
      ? clientTlsCredentials({ caPem: await readText(s.caCert, 'ca-cert') })
      : insecureCredentials(s.insecure === true, 'pgfleet-agent', s.controller);
  }
  const dir = s.tlsDir;
  const certPath = join(dir, AGENT_TLS_FILES.cert);
  const keyPath = join(dir, AGENT_TLS_FILES.key);
  if (!(await exists(certPath)) || !(await exists(keyPath))) await enroll(s, dir, log, stopped);
  const caPem = await readText(s.caCert ?? join(dir, AGENT_TLS_FILES.ca), s.caCert ? 'ca-cert' : 'tls-dir');
  const [certPem, keyPem] = await Promise.all([readText(certPath, 'tls-dir'), readText(keyPath, 'tls-dir')]);
  checkCertificate(certPem, certPath, s, log);
  return clientTlsCredentials({ caPem, certPem, keyPem });
}

/** A certificate for another agent or cluster would be refused by the controller: say so here, naming the file. */
function checkCertificate(certPem: string, path: string, s: AgentSettings, log: Logger): void {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new PgfleetError('InvalidConfig', `${path} is not a PEM certificate`, {
      cause: err,
      hint: 'Remove agent.crt and agent.key and enroll again with a new --enroll-token.',
    });
  }
  const id = agentIdentityFromSubjectAltName(cert.subjectAltName);
  if (!id || id.cluster !== s.cluster || id.agentId !== s.agentId) {
    throw new PgfleetError(
      'InvalidConfig',
      `${path} is for ${id ? `agent '${id.agentId}' of cluster '${id.cluster}'` : 'no pgfleet agent'}, but this agent runs as '${s.agentId}' of cluster '${s.cluster}'`,
      { hint: 'Use the --tls-dir this agent enrolled into, or enroll it into an empty one with a new --enroll-token.' },
    );
  }
  const left = new Date(cert.validTo).getTime() - Date.now();
  if (left < RENEW_WARNING_MS)
    log.warn(
      { notAfter: cert.validTo, path },
      'the agent certificate expires soon: enroll again into an empty --tls-dir with a new token',
    );
}

async function enroll(s: AgentSettings, dir: string, log: Logger, stopped: () => boolean): Promise<void> {
  if (!s.enrollToken) {
    throw new PgfleetError(
      'EnrollmentFailed',
      `${dir} holds no agent certificate (${AGENT_TLS_FILES.cert}, ${AGENT_TLS_FILES.key}) and no --enroll-token was given`,
      {
        hint: 'Issue a token with `pgfleet-controller enroll-token <cluster>` and start the agent once with --enroll-token TOKEN --ca-cert ca.crt.',
      },
    );
  }
  if (!s.caCert) {
    throw new PgfleetError(
      'InvalidConfig',
      "enrolling needs --ca-cert (the controller's ca.crt): the token is only sent to a controller proven by the fleet CA",
    );
  }
  const caPem = await readText(s.caCert, 'ca-cert');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const { createAgentCsr } = await import('@pgfleet/rpc/pki');
  const { csrPem, keyPem } = await createAgentCsr({ agentId: s.agentId, cluster: s.cluster });
  // Any controller of the list enrolls (they share the catalog and the CA): one that is down is passed over.
  const addresses = controllerAddresses(s.controller);
  const clients = addresses.map((address) =>
    createClient(EnrollmentService, address, {
      credentials: clientTlsCredentials({ caPem }),
      defaultDeadlineMs: 30_000,
      unavailableError: 'ControllerUnreachable',
    }),
  );
  try {
    // A controller that is not up yet is waited for, as the Connect loop would; a refusal is final.
    for (let attempt = 0; ; attempt++) {
      const client = clients[attempt % clients.length]!;
      try {
        const res = await client.enroll({ token: s.enrollToken, agentId: s.agentId, cluster: s.cluster, csrPem });
        // Key first: a certificate without its key would look enrolled to the next start.
        await writePemFile(join(dir, AGENT_TLS_FILES.key), keyPem, 0o600);
        await writePemFile(join(dir, AGENT_TLS_FILES.cert), res.certPem, 0o600);
        await writePemFile(join(dir, AGENT_TLS_FILES.ca), caPem, 0o644);
        log.info(
          { tlsDir: dir, notAfter: new X509Certificate(res.certPem).validTo },
          'enrolled with the controller: certificate stored, the enrollment token is no longer needed',
        );
        return;
      } catch (err) {
        if (!PgfleetError.is(err, 'ControllerUnreachable') || stopped()) throw err;
        const backoff = Math.round(reconnectDelayMs(attempt, clients.length));
        log.warn(
          { code: err.code, err: err.message, controller: addresses[attempt % addresses.length], retryInMs: backoff },
          'cannot reach the controller to enroll; retrying',
        );
        await sleep(backoff);
      }
    }
  } finally {
    for (const client of clients) client.close();
  }
}
