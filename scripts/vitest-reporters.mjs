// The reporters of every package's vitest config: the default one, a JSON report
// (`.vitest-report.json`, or $KV_VITEST_REPORT: the runs on other Node versions keep theirs apart),
// which scripts/summarize-tests.mjs adds up, and RunErrorsReporter below.
//
// RunErrorsReporter writes what the JSON report leaves out: the errors outside any test
// (an exception thrown after its test ended, a rejection nobody handled, a test worker that exited
// or was killed) and why the run ended. vitest exits 1 on such an error while its JSON report may
// still say success, and the tests of a file whose worker died are left out of the report's counts.
// scripts/summarize-tests.mjs counts each error as a failure and prints its first line, so a CI
// log's tail says what went wrong.
//
// The file goes next to the JSON report: `.vitest-report.json` → `.vitest-report.errors.json`
// (KV_VITEST_REPORT moves both, as the runs on other Node versions do).
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

const reportFile = () => process.env.KV_VITEST_REPORT ?? '.vitest-report.json';

export class RunErrorsReporter {
  onInit(vitest) {
    this.root = vitest.config.root;
  }

  onTestRunEnd(_testModules, unhandledErrors, reason) {
    const file = resolve(this.root ?? process.cwd(), reportFile().replace(/\.json$/, '.errors.json'));
    const errors = unhandledErrors.map((e) => ({
      name: e?.name ?? 'Error',
      message: String(e?.message ?? e),
      cause: e?.cause ? String(e.cause.message ?? e.cause) : undefined,
      // vitest names the file (and the last test) that was running when the error came.
      file: e?.VITEST_TEST_PATH,
      test: e?.VITEST_TEST_NAME,
    }));
    writeFileSync(file, JSON.stringify({ reason, errors }, null, 2));
  }
}

export const reporters = ['default', ['json', { outputFile: reportFile() }], new RunErrorsReporter()];
