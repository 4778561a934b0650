// The function the soak deploys in each execution environment: one of the examples' handlers, unchanged, with the
// soak's fault middleware composed after the example's middlewares. Bundled with esbuild, as the demo bundles the
// examples, and loaded by the execution environment; SOAK_FUNCTION says which example this environment runs.
//
// - The example's module is imported at cold start, with the configuration it reads from the environment.
// - orders-api and webhook-relay get a second httpPool() with the example's own settings (origin, connections,
//   logger) and the soak's clock (SOAK_BODY_TIMEOUT_MS, SOAK_HEADERS_TIMEOUT_MS: seconds of the real defaults
//   become fractions of one): composed after the example's, its `before` hands the handler `context.http`. The
//   same middleware, configured as users configure it, so that "partner slower than bodyTimeout" costs
//   milliseconds.
// - Logs go out as Lambda's JSON log format, one line per call with the invocation's request id, so that the soak
//   knows which invocation reported what (a failed background task, a server error).
// - The event arrives in an envelope: `{ soak: directive, event }`. The example gets the event; the fault
//   middleware gets the directive.

import { format } from "node:util";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { Request } from "@middy/core";
import { httpPool } from "@middy-conn/http-pool";
import type { Context } from "aws-lambda";
import type { Directive, Envelope, FunctionName, MemoryProbe } from "./directive.ts";
import { faultMiddleware } from "./fault-middleware.ts";

type ExampleHandler = ((event: unknown, context: Context) => Promise<unknown>) & {
	use(middleware: object): unknown;
};

const functionName = process.env.SOAK_FUNCTION as FunctionName;

/** The request id of the invocation running now: this environment runs one at a time, as Lambda does. */
let currentRequestId: string | undefined;

// Lambda's JSON log format: one line per call, never split, with the request id it was written for.
for (const level of ["log", "info", "warn", "error", "debug"] as const) {
	const name = level === "log" ? "INFO" : level.toUpperCase();
	console[level] = (...args: unknown[]) => {
		process.stdout.write(
			`${JSON.stringify({
				timestamp: new Date().toISOString(),
				level: name,
				requestId: currentRequestId,
				message: format(...args),
			})}\n`,
		);
	};
}

const loadExample = async (): Promise<ExampleHandler> => {
	switch (functionName) {
		case "orders-api":
			return (await import("../../examples/orders-api/handler.ts")).handler as unknown as ExampleHandler;
		case "ledger-writer":
			return (await import("../../examples/read-after-write/handler.ts")).writer as unknown as ExampleHandler;
		case "ledger-reader":
			return (await import("../../examples/read-after-write/handler.ts")).reader as unknown as ExampleHandler;
		case "webhook-relay":
			return (await import("../../examples/webhook-relay/handler.ts")).handler as unknown as ExampleHandler;
		default:
			throw new Error(`SOAK_FUNCTION must be one of the examples' functions, not ${functionName}`);
	}
};

const example = await loadExample();

const soakClock = {
	bodyTimeout: Number(process.env.SOAK_BODY_TIMEOUT_MS ?? 10_000),
	headersTimeout: Number(process.env.SOAK_HEADERS_TIMEOUT_MS ?? 10_000),
};
if (functionName === "orders-api") {
	// orders-api/handler.ts: httpPool({ origin: WEBHOOK_ORIGIN, connections: 2, logger: console })
	example.use(
		httpPool({ origin: process.env.WEBHOOK_ORIGIN, connections: 2, logger: console, ...soakClock }),
	);
}
if (functionName === "webhook-relay") {
	// webhook-relay/handler.ts: httpPool({ origin: PARTNER_ORIGIN, connections: RELAY_CONCURRENCY, logger: console })
	example.use(
		httpPool({
			origin: process.env.PARTNER_ORIGIN,
			connections: Number(process.env.RELAY_CONCURRENCY ?? 4),
			logger: console,
			...soakClock,
		}),
	);
}

const directives = new WeakMap<object, Directive>();
example.use(
	faultMiddleware({
		functionName,
		directiveOf: (request: Request) => directives.get(request.context),
		partnerToken: process.env.SOAK_PARTNER_TOKEN ?? "",
		auditPath: process.env.SOAK_AUDIT_PATH ?? "/v1/audit",
	}),
);

// A full GC before measuring the heap, so that the figure is what is really retained.
setFlagsFromString("--expose-gc");
const collectGarbage = runInNewContext("gc") as () => void;

const memory = (): MemoryProbe => {
	collectGarbage();
	return {
		heapUsed: process.memoryUsage().heapUsed,
		rss: process.memoryUsage().rss,
		handles: process.getActiveResourcesInfo().length,
	};
};

export const handler = async (envelope: Envelope, context: Context): Promise<unknown> => {
	currentRequestId = context.awsRequestId;
	const directive = envelope?.soak;
	if (directive?.probe === "memory") return memory();
	if (directive) directives.set(context, directive);
	return example(envelope?.event, context);
};
