// @middy-conn/lifecycle/internal: what the packages of middy-conn share beyond the invocation lifecycle, in one
// copy. For those packages only: it may change in any release.
export { codeOf, redact, redactError } from "./errors.ts";
export {
	type InvocationMiddlewareHooks,
	type InvocationMiddlewareOptions,
	invocationMiddleware,
} from "./invocation-middleware.ts";
export { lifecycleError } from "./lifecycle-errors.ts";
export { isLogger } from "./logger.ts";
export { closestName, maxTimerMs, reservedContextKeys } from "./option-rules.ts";
export { reportStats, type StatsSink, wantsStats } from "./stats-report.ts";
export { type TlsSettingsCheck, tlsOptionNames, tlsSettingsCheck } from "./tls-options.ts";
