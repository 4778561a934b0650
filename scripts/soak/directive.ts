// What the soak and the functions it runs agree on: the functions, the faults, and the envelope each invocation's
// event travels in. Imported by the soak (the parent) and by the fixture bundled into the execution environments.

/**
 * The functions the soak deploys, one execution environment each: the examples' four, and three of the soak's own
 * (scripts/soak/functions/lambda/): export-stream (response streaming), ledger-batch (a managed transaction and a
 * timeoutEarlyResponse that answers) and batch-lmi (ledger-batch again, in a Lambda Managed Instances environment
 * that runs several invocations at once).
 */
export const FUNCTIONS = [
	"orders-api",
	"ledger-writer",
	"ledger-reader",
	"webhook-relay",
	"export-stream",
	"ledger-batch",
	"batch-lmi",
] as const;
export type FunctionName = (typeof FUNCTIONS)[number];

/** Every fault the soak injects, in the order the report lists them. */
export const FAULTS = {
	"handler-throws": "the handler throws inside its transaction",
	"after-throws": "an `after` middleware throws",
	"early-response": "a `before` answers early after DB and HTTP were used",
	"early-background": "a `before` answers early, its DB write handed to waitUntil",
	"timeout-query": "Middy's early timeout during a query",
	"timeout-http": "Middy's early timeout during an HTTP request",
	"timeout-answers": "a timeoutEarlyResponse answers mid-transaction",
	"kill-query": "the DB connection is KILLed mid-query",
	"db-restart": "the DB server restarts",
	"db-restart-live": "the DB server restarts while invocations run",
	"partner-reset": "the partner resets connections",
	"partner-close-idle": "the partner closes idle sockets",
	"partner-slow-body": "the partner is slower than bodyTimeout",
	"long-freeze": "frozen longer than the partner's keep-alive",
	"malformed-event": "a malformed event",
	"stream-db": "response streaming: rows from the DB",
	"stream-partner": "response streaming: a partner's body proxied",
	concurrent: "several invocations at once in one environment",
} as const;
export type FaultKind = keyof typeof FAULTS;

/** Checks that run inside a function without being faults. */
export type ProbeKind =
	/** Session state the connection carries into this invocation: user variable, open transaction, snapshot. */
	| "state"
	/** Heap after a full GC, RSS and active handles, without running the handler. */
	| "memory";

export interface Directive {
	/** Unique per invocation: marker rows, request ids and SQL markers carry it. */
	token: string;
	fault?: FaultKind;
	probe?: ProbeKind;
	/** timeout-query and kill-query: how long the statement slipped in before the handler's first one sleeps. */
	sleepSeconds?: number;
	/**
	 * early-background: what the `before` hands to context.waitUntil before it answers early. "promise": the
	 * INSERT's promise (the connection opens in the `before`); "function": a function that waits a moment and then
	 * INSERTs (the connection opens during teardown); "after-select": a SELECT first, then the INSERT's promise.
	 */
	background?: "promise" | "function" | "after-select";
	/** Streaming functions: the client of the Lambda runtime (lambda-streaming.ts's invokeStreaming options). */
	stream?: { writeDelayMs?: number; failAfterBytes?: number };
}

/** What the soak sends as an invocation's event: the function's own event, and what to do to it. */
export interface Envelope {
	soak: Directive;
	event: unknown;
}

/** A state probe's answer (read on the connection the invocation got, before any statement of its own). */
export interface StateProbe {
	/** `@soak_marker`: set by an earlier invocation's early response; must never be seen again. */
	marker: string | null;
	/** `@@in_transaction`: 1 if a transaction was still open on the connection. */
	inTransaction: number;
	/** The newest ledger entry this connection sees: an old snapshot would miss one committed just before. */
	maxEntryId: number | null;
}

export interface MemoryProbe {
	/** V8 heap in use right after a full garbage collection. */
	heapUsed: number;
	rss: number;
	handles: number;
}

/** The statement slipped in before the handler's first one: the soak finds it in the processlist by `marker`. */
export const sleepMarker = (fault: FaultKind, token: string): string => `soak-${fault}-${token}`;

/** Names of marker rows written in transactions that must be rolled back. */
export const markerName = (token: string): string => `marker-${token}`;

/**
 * The SQL comment every statement of an invocation carries (the fault middleware prefixes context.db's statements
 * with it; the soak's own functions add it to their raw statements): the soak finds an invocation's statements in
 * the server's processlist by it.
 */
export const statementTag = (token: string): string => `/* soak:${token} */`;

/** The rows export-stream reads (table soak_stream_rows, filled once by the soak), and the body it makes of them. */
export const STREAM_ROWS = 4000;
export const streamPayload = (id: number): string =>
	`row ${id} ${"abcdefghijklmnopqrstuvwxyz".repeat(1 + (id % 4)).slice(0, 20 + ((id * 7) % 60))}`;
/** One line of the NDJSON body: the row as the function serialises it. */
export const streamLine = (id: number): string => `${JSON.stringify({ id, payload: streamPayload(id) })}\n`;

/** What a streaming function's client received (export-stream's answer to the soak, made by the fixture). */
export interface StreamedAnswer {
	/** How the handler's promise settled: rejected is an invocation error (the runtime's trailers carry it). */
	status: "fulfilled" | "rejected";
	/** From the HTTP prelude (HttpResponseStream.from). */
	statusCode?: number;
	/** The body as received, after the prelude. */
	bytes: number;
	sha256: string;
	/** Its first 200 bytes, as text. */
	head: string;
	/** The response stream had finished (every write acknowledged, end called). */
	finished: boolean;
	/** The invocation's error, when it failed. */
	error?: { name: string; message: string; code?: string } | undefined;
	/** The error the response stream itself failed with (a failing write). */
	streamError?: { name: string; message: string; code?: string } | undefined;
	/**
	 * The invocation's moments, in order: "source:ended" (the middlewares' guard had read the body's source to its
	 * end: the COMMIT follows), "response:finished" or "response:failed" (the response stream broke),
	 * "handler:resolved" or "handler:rejected".
	 */
	timeline: string[];
}
