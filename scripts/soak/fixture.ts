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
// - The soak's own functions (functions/lambda/) are loaded the same way. export-stream is a streaming function:
//   this handler invokes it as the Lambda runtime does (the test harness's invokeStreaming: a response stream, the
//   `awslambda` stand-in) and answers with what the client received: its size and SHA-256, the prelude, how the
//   invocation ended, and the order of its moments (the body's source read to its end, the response stream
//   finished or broken, the handler settled).
// - In a Managed Instances environment (SOAK_CONCURRENT=1) several invocations run at once: a log line carries the
//   request id of the invocation whose async context wrote it.

import { AsyncLocalStorage } from "node:async_hooks";
import { createHash } from "node:crypto";
import { format } from "node:util";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { Request } from "@middy/core";
import { httpPool } from "@middy-conn/http-pool";
import { invokeStreaming } from "@middy-conn/test-harness/lambda-streaming";
import type { Context } from "aws-lambda";
import type { Directive, Envelope, FunctionName, MemoryProbe, StreamedAnswer } from "./directive.ts";
import { faultMiddleware } from "./fault-middleware.ts";

type ExampleHandler = ((event: unknown, context: Context) => Promise<unknown>) & {
	use(middleware: object): unknown;
};

const functionName = process.env.SOAK_FUNCTION as FunctionName;

/** The request id of the invocation running now: a standard environment runs one at a time, as Lambda does. */
let currentRequestId: string | undefined;
/** Managed Instances: the request id of the invocation whose async context is running. */
const concurrent = process.env.SOAK_CONCURRENT === "1";
const requestIds = new AsyncLocalStorage<string>();
const requestIdNow = () => (concurrent ? (requestIds.getStore() ?? currentRequestId) : currentRequestId);

// Lambda's JSON log format: one line per call, never split, with the request id it was written for.
for (const level of ["log", "info", "warn", "error", "debug"] as const) {
	const name = level === "log" ? "INFO" : level.toUpperCase();
	console[level] = (...args: unknown[]) => {
		process.stdout.write(
			`${JSON.stringify({
				timestamp: new Date().toISOString(),
				level: name,
				requestId: requestIdNow(),
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
		case "export-stream":
			return (await import("./functions/lambda/export-stream.ts")).exportStream as unknown as ExampleHandler;
		case "ledger-batch":
		case "batch-lmi":
			return (await import("./functions/lambda/ledger-batch.ts")).ledgerBatch as unknown as ExampleHandler;
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
/** Streaming: each invocation's timeline (invokeStreaming's moments, and the end of the body's source). */
const timelines = new WeakMap<object, string[]>();
example.use(
	faultMiddleware({
		functionName,
		directiveOf: (request: Request) => directives.get(request.context),
		partnerToken: process.env.SOAK_PARTNER_TOKEN ?? "",
		auditPath: process.env.SOAK_AUDIT_PATH ?? "/v1/audit",
		// 'end': the middlewares' guard has read the source to its last byte (it is never emitted for a source
		// destroyed before that, as when the response stream breaks first).
		onBodySource: (request, source) => {
			const timeline = timelines.get(request.context);
			if (timeline) source.once("end", () => timeline.push("source:ended"));
		},
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

const errorOf = (error: unknown): StreamedAnswer["error"] => {
	if (error === undefined) return undefined;
	const fields = error as { name?: unknown; message?: unknown; code?: unknown } | null;
	return {
		name: typeof fields?.name === "string" ? fields.name : "Error",
		message: typeof fields?.message === "string" ? fields.message : String(error),
		...(typeof fields?.code === "string" ? { code: fields.code } : {}),
	};
};

/** A streaming function, invoked as the Lambda runtime does: what its client received, and how it ended. */
const invokeStreamed = async (event: unknown, context: Context, directive: Directive | undefined) => {
	const timeline: string[] = [];
	timelines.set(context, timeline);
	const streamed = await invokeStreaming(example, event, context, { ...directive?.stream, timeline });
	const answer: StreamedAnswer = {
		status: streamed.settled.status,
		...(typeof streamed.prelude?.statusCode === "number" ? { statusCode: streamed.prelude.statusCode } : {}),
		bytes: streamed.body.length,
		sha256: createHash("sha256").update(streamed.body).digest("hex"),
		head: streamed.body.subarray(0, 200).toString("utf8"),
		finished: streamed.finished,
		error: errorOf(streamed.settled.status === "rejected" ? streamed.settled.reason : undefined),
		streamError: errorOf(streamed.streamError),
		timeline: streamed.timeline,
	};
	return { streamed: answer };
};

const streaming = functionName === "export-stream";

export const handler = async (envelope: Envelope, context: Context): Promise<unknown> => {
	currentRequestId = context.awsRequestId;
	const directive = envelope?.soak;
	if (directive?.probe === "memory") return memory();
	if (directive) directives.set(context, directive);
	return requestIds.run(context.awsRequestId, () =>
		streaming ? invokeStreamed(envelope?.event, context, directive) : example(envelope?.event, context),
	);
};
