import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
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
