// @middy-conn/lifecycle/internal: what the packages of middy-conn share beyond the invocation lifecycle, in one
// copy. For those packages only: it may change in any release.
export { codeOf, redact, redactError } from "./errors.ts";
export { lifecycleError } from "./lifecycle-errors.ts";
export { isLogger } from "./logger.ts";
export { maxTimerMs, reservedContextKeys } from "./option-rules.ts";
export { reportStats, type StatsSink, wantsStats } from "./stats-report.ts";
export { tlsOptionNames, unverifiedTlsWarning } from "./tls-options.ts";
