import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** PEM file paths of a throwaway PKI made by `makeTestCertificates`. */
export interface TestCertificates {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** A second CA that signed nothing here: trusting only it must fail. */
  readonly otherCa: string;
}

/**
 * Makes, with the openssl command, a throwaway CA valid for two days, a
 * server certificate for 127.0.0.1 and `localhost` (plus `extraDnsNames`), a
 * client certificate, and an unrelated second CA, all in `dir`.
 */
export function makeTestCertificates(dir: string, extraDnsNames: readonly string[] = []): TestCertificates {
  const path = (name: string) => join(dir, name);
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const keyArgs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const selfSigned = (name: string, cn: string) =>
    run(
      'req',
      '-x509',
      ...keyArgs,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-subj',
      `/CN=${cn}`,
    );
  const issue = (name: string, cn: string, extensions: string) => {
    writeFileSync(path(`${name}.ext`), extensions);
    run('req', ...keyArgs, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    run(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
    );
  };
  selfSigned('ca', 'kv test CA');
  selfSigned('other', 'unrelated CA');
  const dns = ['localhost', ...extraDnsNames].map((n) => `DNS:${n}`).join(',');
  issue(
    'server',
    '127.0.0.1',
    `subjectAltName=IP:127.0.0.1,${dns}\nextendedKeyUsage=serverAuth,clientAuth\n`,
  );
  issue('client', 'kv test client', 'extendedKeyUsage=clientAuth\n');
  return {
    ca: path('ca.crt'),
    serverCert: path('server.crt'),
    serverKey: path('server.key'),
    clientCert: path('client.crt'),
    clientKey: path('client.key'),
    otherCa: path('other.crt'),
  };
}

/** Certificates made in a temporary directory, or why they could not be (see `testCertificates`). */
export type MadeCertificates =
  | { readonly files: TestCertificates; readonly skip: false; dispose(): void }
  | { readonly files: undefined; readonly skip: string; dispose(): void };

/**
 * `makeTestCertificates` in a fresh temporary directory named after `name`, for a test file's TLS
 * server. Outside CI, openssl failing gives the reason to skip (loudly) instead; with CI=true it
 * throws. `dispose()` removes the directory.
 */
export function testCertificates(name: string, extraDnsNames: readonly string[] = []): MadeCertificates {
  const dir = mkdtempSync(join(tmpdir(), `kv-${name}-tls-`));
  const dispose = () => rmSync(dir, { recursive: true, force: true });
  try {
    return { files: makeTestCertificates(dir, extraDnsNames), skip: false, dispose };
  } catch (error) {
    dispose();
    const why = `openssl could not make the test certificates: ${(error as Error).message}`;
    if (process.env.CI === 'true') throw new Error(why, { cause: error });
    return { files: undefined, skip: why, dispose };
  }
}

/**
 * The file options of a TLS server that serves with the test server certificate and asks clients
 * for one of the test CA (mutual TLS), plus the client pair it uses for its own connections.
 */
export function mutualTls(files: TestCertificates): {
  certFile: string;
  keyFile: string;
  caFile: string;
  clientCertAuth: true;
  clientCertFile: string;
  clientKeyFile: string;
} {
  return {
    certFile: files.serverCert,
    keyFile: files.serverKey,
    caFile: files.ca,
    clientCertAuth: true,
    clientCertFile: files.clientCert,
    clientKeyFile: files.clientKey,
  };
}
