// One logging shape for both middlewares. It accepts `console` and the Powertools Logger alike: both take a
// message followed by structured extras (`logger.warn("message", { ... })`), and both have info/warn/error.

export interface Logger {
	info(message: string, ...extra: unknown[]): unknown;
	warn(message: string, ...extra: unknown[]): unknown;
	error(message: string, ...extra: unknown[]): unknown;
}

/** `false` silences the middleware; anything with info/warn/error (console, Powertools Logger, pino-like) works. */
export type LoggerOption = Logger | false;

export const isLogger = (value: unknown): value is Logger =>
	value !== null &&
	typeof value === "object" &&
	["info", "warn", "error"].every((level) => typeof (value as Record<string, unknown>)[level] === "function");

const silent: Logger = { info() {}, warn() {}, error() {} };

/**
 * Wraps the user's logger so that a throwing logger can never turn a successful invocation into a failure, and
 * calls it as a method (Powertools' Logger needs its `this`).
 */
export const safeLogger = (logger: LoggerOption | undefined): Logger => {
	if (!logger) return silent;
	const call =
		(level: keyof Logger) =>
		(message: string, ...extra: unknown[]) => {
			try {
				logger[level](message, ...extra);
			} catch {
				// a logger failure is not the invocation's failure
			}
		};
	return { info: call("info"), warn: call("warn"), error: call("error") };
};
