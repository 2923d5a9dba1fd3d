/**
 * The controller's TLS directory (`--tls-dir`, made by `pgfleet-controller ca init --dir`): the
 * fleet CA that signs agent certificates and the controller's own server certificate.
 *
 *   ca.crt      the fleet CA certificate (give it to agents and admins as --ca-cert)
 *   ca.key      its private key (0600; only the controller reads it, to sign enrollments)
 *   server.crt  the controller's certificate, SANs from --hostname
 *   server.key  its private key (0600)
 *
 * `ca init` on a directory that already holds a CA keeps it and only issues a new server
 * certificate (new host names, or renewal before it expires): agents' certificates stay valid.
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PgfleetError } from '@pgfleet/core';
import { writePemFile, type ServerTlsMaterial } from '@pgfleet/rpc';
import type { CertificateAndKey } from '@pgfleet/rpc/pki';

export const TLS_FILES = {
  caCert: 'ca.crt',
  caKey: 'ca.key',
  serverCert: 'server.crt',
  serverKey: 'server.key',
} as const;
export const DEFAULT_SERVER_HOSTNAMES = ['localhost', '127.0.0.1'] as const;

export interface ControllerTls extends ServerTlsMaterial {
  /** The CA's certificate and key, for signing agent certificates at enrollment. */
  ca: CertificateAndKey;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

export interface CaInitOutcome {
  dir: string;
  /** False when an existing CA was kept. */
  createdCa: boolean;
  serverNotAfter: Date;
  hostnames: readonly string[];
}

export async function initTlsDir(dir: string, hostnames: readonly string[], now = new Date()): Promise<CaInitOutcome> {
  // Loaded here only: issuing certificates is the one job that needs the X.509 library.
  const pki = await import('@pgfleet/rpc/pki');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caCertPath = join(dir, TLS_FILES.caCert);
  const caKeyPath = join(dir, TLS_FILES.caKey);
  let ca: CertificateAndKey;
  const haveCert = await exists(caCertPath);
  const haveKey = await exists(caKeyPath);
  if (haveCert !== haveKey) {
    throw new PgfleetError(
      'InvalidConfig',
      `${dir} holds ${haveCert ? TLS_FILES.caCert : TLS_FILES.caKey} without ${haveCert ? TLS_FILES.caKey : TLS_FILES.caCert}`,
      {
        hint: 'Restore the missing file, or move the directory away and run `ca init` again (agents then need to enroll again).',
      },
    );
  }
  const createdCa = !haveCert;
  if (createdCa) {
    ca = await pki.createCertificateAuthority({ now });
    // Key first: a cert without its key would make the next run fail above instead of recreating both.
    await writePemFile(caKeyPath, ca.keyPem, 0o600);
    await writePemFile(caCertPath, ca.certPem, 0o644);
  } else {
    ca = { certPem: await readFile(caCertPath, 'utf8'), keyPem: await readFile(caKeyPath, 'utf8') };
  }
  const server = await pki.issueServerCertificate(ca, { hostnames, now });
  await writePemFile(join(dir, TLS_FILES.serverKey), server.keyPem, 0o600);
  await writePemFile(join(dir, TLS_FILES.serverCert), server.certPem, 0o644);
  return { dir, createdCa, hostnames, serverNotAfter: new Date(pki.parseCertificate(server.certPem).validTo) };
}

/** Reads the TLS directory for `run --tls-dir`; InvalidConfig naming the missing file and how to make it. */
export async function loadTlsDir(dir: string): Promise<ControllerTls> {
  const read = async (name: string): Promise<string> => {
    try {
      return await readFile(join(dir, name), 'utf8');
    } catch (err) {
      throw new PgfleetError(
        'InvalidConfig',
        `option 'tls-dir': cannot read ${join(dir, name)}: ${(err as Error).message}`,
        {
          cause: err,
          hint: `Create the CA and server certificate with \`pgfleet-controller ca init --dir ${dir} --hostname <names the agents dial>\`.`,
        },
      );
    }
  };
  const [caCert, caKey, serverCert, serverKey] = await Promise.all([
    read(TLS_FILES.caCert),
    read(TLS_FILES.caKey),
    read(TLS_FILES.serverCert),
    read(TLS_FILES.serverKey),
  ]);
  return { caPem: caCert, certPem: serverCert, keyPem: serverKey, ca: { certPem: caCert, keyPem: caKey } };
}
