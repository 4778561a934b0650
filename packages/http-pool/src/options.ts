// Options of httpPool(): their types, the defaults chosen for Lambda, and validation at the time httpPool() is
// called (a typo or a bad value must fail at cold start, not on the first request of some later invocation).
import type { ConnectionOptions } from "node:tls";
import type { Request } from "@middy/core";
import { type OptionSchema, validateOptions } from "@middy/util";
import { type LoggerOption, waitUntilDefaults } from "@middy-conn/lifecycle";
import { isLogger, maxTimerMs, reservedContextKeys } from "@middy-conn/lifecycle/internal";
import type { Dispatcher } from "undici";
import type { HttpPoolStats } from "./telemetry.ts";

export const pkg = "@middy-conn/http-pool";

/** undici's connect options: TLS (`ca`, `cert`, `key`, `servername`, `rejectUnauthorized`, ...) and TCP ones. */
export type HttpPoolConnectOptions = ConnectionOptions & {
	/** TCP keep-alive on the socket. undici's default: true. */
	keepAlive?: boolean;
	keepAliveInitialDelay?: number;
	maxCachedSessions?: number;
	localAddress?: string;
	family?: number;
	socketPath?: string;
};

export interface HttpPoolRetryOptions {
	/** Replays after the first attempt, for idempotent requests that met a socket error. Default 2. */
	maxRetries?: number;
	/** Wait before the second replay (ms); the first replay never waits. Default 50. */
	minTimeout?: number;
	/** Longest wait between replays (ms). Default 500. */
	maxTimeout?: number;
	/** Growth of the wait from one replay to the next. Default 2. */
	timeoutFactor?: number;
}

export type HttpPoolInterceptor = Dispatcher.DispatcherComposeInterceptor;

export interface HttpPoolOptions<TContextKey extends string = "http"> {
	/** `https://host[:port]`: requests may then give only a `path`. Without it, each request gives its `origin`. */
	origin?: string;
	/** Connections per origin, shared by the invocations of this execution environment. Default 10. */
	connections?: number;
	/** Idle time (ms) after which undici closes a kept-alive socket. Default 4000. */
	keepAliveTimeout?: number;
	/** Ceiling (ms) on a server's `Keep-Alive: timeout=` hint. Default 30000. */
	keepAliveMaxTimeout?: number;
	/** TCP + TLS connect timeout (ms). Default 3000. */
	connectTimeout?: number;
	/** Time (ms) to wait for the response headers. Default 10000. */
	headersTimeout?: number;
	/** Longest silence (ms) between two body chunks. Default 10000. */
	bodyTimeout?: number;
	/** undici's connect options (`ca`, `rejectUnauthorized` (default true), `servername`, `cert`, `key`, ...). */
	connect?: HttpPoolConnectOptions;
	/** Negotiate HTTP/2 over TLS (ALPN). Default false: HTTP/1.1, one request per connection at a time. */
	allowH2?: boolean;
	/** Replay of idempotent requests after a socket error, or `false`. Default `{ maxRetries: 2, ... }`. */
	retry?: HttpPoolRetryOptions | false;
	/** Your own undici interceptors (`interceptors.redirect()`, `interceptors.dns()`, ...), composed in. */
	interceptors?: HttpPoolInterceptor[];
	/** Where the dispatcher goes on the context. Default "http". (`context.waitUntil` keeps its name.) */
	contextKey?: TContextKey;
	/** Time (ms) kept back from `getRemainingTimeInMillis()` when waiting for background tasks. Default 500. */
	waitUntilReserve?: number;
	/** Longest wait (ms) for background tasks, and the wait when the context has no Lambda clock. Default 10000. */
	waitUntilTimeout?: number;
	/** Where failed or aborted background tasks are reported: console, a Powertools Logger, or false. Default console. */
	logger?: LoggerOption;
	/** Called once per invocation with its connection and background-task counters. */
	onStats?: (stats: HttpPoolStats, request: Request) => void | Promise<void>;
	/** Also log the counters as one structured `info` line per invocation. Default false. */
	logStats?: boolean;
}

export interface ResolvedRetryOptions {
	maxRetries: number;
	minTimeout: number;
	maxTimeout: number;
	timeoutFactor: number;
}

/** The options after defaults, as the rest of the package reads them. */
export interface ResolvedOptions {
	origin: string | undefined;
	connections: number;
	keepAliveTimeout: number;
	keepAliveMaxTimeout: number;
	connectTimeout: number;
	headersTimeout: number;
	bodyTimeout: number;
	connect: HttpPoolConnectOptions;
	allowH2: boolean;
	retry: ResolvedRetryOptions | false;
	interceptors: HttpPoolInterceptor[];
	contextKey: string;
	waitUntilReserve: number;
	waitUntilTimeout: number;
	logger: LoggerOption;
	onStats: HttpPoolOptions["onStats"];
	logStats: boolean;
}

export const retryDefaults: ResolvedRetryOptions = {
	// Two replays cover the case that matters on Lambda: after a long freeze, the first (and maybe a second)
	// pooled socket is dead; a third failure in a row is an outage, not a stale connection.
	maxRetries: 2,
	minTimeout: 50,
	maxTimeout: 500,
	timeoutFactor: 2,
};

export const defaults = {
	origin: undefined,
	// Enough parallelism for a handler that fans out, small enough that hundreds of concurrent environments do
	// not exhaust a third party's connection limit (total = connections × concurrent environments).
	connections: 10,
	// undici's own default; well below the 60 s idle timeout of ALB and the 350 s of a NAT gateway.
	keepAliveTimeout: 4_000,
	// A server may advertise a longer keep-alive; never trust it beyond 30 s, under common load balancer timeouts.
	keepAliveMaxTimeout: 30_000,
	// undici waits 10 s for a connection; on Lambda a peer that does not accept within 3 s is down, and the time
	// is billed.
	connectTimeout: 3_000,
	// undici's 300 s exceeds most Lambda timeouts: a hung peer would take the whole invocation with it.
	headersTimeout: 10_000,
	bodyTimeout: 10_000,
	// Certificate verification is on unless the caller turns it off explicitly (and is warned).
	connect: { rejectUnauthorized: true } as HttpPoolConnectOptions,
	// HTTP/1.1: `connections` then means what it says for a third party's limit, an unread body holds one socket
	// that the end-of-invocation cleanup can give back, and a session lost during a freeze takes one request with
	// it rather than every multiplexed stream.
	allowH2: false,
	retry: retryDefaults,
	interceptors: [],
	contextKey: "http",
	...waitUntilDefaults,
	logger: console,
	onStats: undefined,
	logStats: false,
} satisfies ResolvedOptions;

const fail = (message: string): never => {
	throw new TypeError(message, { cause: { package: pkg } });
};

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
	value !== null && typeof value === "object" && !Array.isArray(value);

// Bounded by what a Node timer can hold: undici hands these to setTimeout, which fires at once beyond it.
const ms = { type: "number", minimum: 0, maximum: maxTimerMs } as const;
const positiveMs = { type: "number", exclusiveMinimum: 0, maximum: maxTimerMs } as const;

// The JSON-schema form of @middy/util's validateOptions, as @middy/core uses it: unknown keys are rejected, and
// each mismatch is a TypeError naming the option. `retry` and `logger` accept two shapes each and get their own
// messages below.
const schema: OptionSchema = {
	type: "object",
	properties: {
		origin: { type: "string" },
		connections: { type: "integer", minimum: 1 },
		keepAliveTimeout: positiveMs,
		keepAliveMaxTimeout: positiveMs,
		connectTimeout: positiveMs,
		headersTimeout: ms,
		bodyTimeout: ms,
		connect: { type: "object", additionalProperties: true },
		allowH2: { type: "boolean" },
		retry: { instanceof: "Object" },
		interceptors: { type: "array", items: { instanceof: "Function" } },
		contextKey: { type: "string", minLength: 1 },
		waitUntilReserve: ms,
		waitUntilTimeout: ms,
		logger: { instanceof: "Object" },
		onStats: { instanceof: "Function" },
		logStats: { type: "boolean" },
	},
	additionalProperties: false,
};

const retrySchema: OptionSchema = {
	type: "object",
	properties: {
		retry: {
			type: "object",
			properties: {
				maxRetries: { type: "integer", minimum: 0 },
				minTimeout: ms,
				maxTimeout: ms,
				timeoutFactor: { type: "number", minimum: 1 },
			},
			additionalProperties: false,
		},
	},
};

/** `https://api.example.com` or `http://127.0.0.1:8080`: a scheme, a host, maybe a port, and nothing else. */
const checkOrigin = (origin: string): string => {
	let url: URL;
	try {
		url = new URL(origin);
	} catch (cause) {
		// Echo what was given, but never credentials someone put in it.
		const shown = origin.replace(/\/\/.*@/, "//***@");
		throw new TypeError(
			`Option 'origin' must be an http(s) URL origin such as https://api.example.com, got ${shown}`,
			{
				cause: { package: pkg, error: cause },
			},
		);
	}
	if (url.protocol !== "http:" && url.protocol !== "https:") {
		fail(`Option 'origin' must use http: or https:, got ${url.protocol}`);
	}
	if (
		(url.pathname !== "/" && url.pathname !== "") ||
		url.search ||
		url.hash ||
		url.username ||
		url.password
	) {
		fail(
			`Option 'origin' must be an origin without path, query, fragment or credentials (such as ${url.origin}); give the path in each request`,
		);
	}
	return url.origin;
};

const checkConnect = (connect: Record<string, unknown>) => {
	const { ca, rejectUnauthorized, servername } = connect;
	const isPem = (value: unknown) => typeof value === "string" || value instanceof Uint8Array;
	if (ca !== undefined && !isPem(ca) && !(Array.isArray(ca) && ca.every(isPem))) {
		fail("Option 'connect.ca' must be a PEM string, a Buffer, or an array of them");
	}
	if (rejectUnauthorized !== undefined && typeof rejectUnauthorized !== "boolean") {
		fail("Option 'connect.rejectUnauthorized' must be boolean");
	}
	if (servername !== undefined && typeof servername !== "string") {
		fail("Option 'connect.servername' must be string");
	}
	if (typeof connect.timeout === "number") {
		fail("Option 'connect.timeout' is not supported; use 'connectTimeout'");
	}
};

/** Validates the options (TypeError naming the option) and fills in the defaults. */
export const httpPoolValidateOptions = (options: HttpPoolOptions<string> = {}): ResolvedOptions => {
	if (!isPlainObject(options)) fail("httpPool options must be an object");
	validateOptions(pkg, schema, { ...options, retry: undefined, logger: undefined });

	const origin = options.origin === undefined ? undefined : checkOrigin(options.origin);
	if (options.connect !== undefined) checkConnect(options.connect as Record<string, unknown>);

	let retry: ResolvedRetryOptions | false;
	if (options.retry === false) {
		retry = false;
	} else if (options.retry === undefined) {
		retry = retryDefaults;
	} else {
		if (!isPlainObject(options.retry)) {
			fail("Option 'retry' must be false or an object { maxRetries, minTimeout, maxTimeout, timeoutFactor }");
		}
		// Nested keys are reported with their full path, like `retry.maxRetries`.
		validateOptions(pkg, retrySchema, { retry: options.retry });
		retry = { ...retryDefaults, ...withoutUndefined(options.retry as Record<string, unknown>) };
	}

	if (options.contextKey !== undefined && reservedContextKeys.includes(options.contextKey)) {
		fail(
			`Option 'contextKey' must not be '${options.contextKey}', a key the Lambda context (or waitUntil) already uses`,
		);
	}
	if (options.logger !== undefined && options.logger !== false && !isLogger(options.logger)) {
		fail(
			"Option 'logger' must be false or an object with info, warn and error methods (console, Powertools Logger)",
		);
	}

	const resolved: ResolvedOptions = {
		...defaults,
		...withoutUndefined(options as Record<string, unknown>),
		origin,
		retry,
		connect: { ...defaults.connect, ...options.connect },
		interceptors: [...(options.interceptors ?? [])],
	};
	if (resolved.keepAliveMaxTimeout < resolved.keepAliveTimeout) {
		fail(
			`Option 'keepAliveMaxTimeout' (${resolved.keepAliveMaxTimeout}) must be >= 'keepAliveTimeout' (${resolved.keepAliveTimeout})`,
		);
	}
	return resolved;
};

const withoutUndefined = (record: Record<string, unknown>) =>
	Object.fromEntries(Object.entries(record).filter(([, value]) => value !== undefined));
