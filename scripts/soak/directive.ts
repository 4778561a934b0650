// What the soak and the functions it runs agree on: the functions, the faults, and the envelope each invocation's
// event travels in. Imported by the soak (the parent) and by the fixture bundled into the execution environments.

/** The examples' functions, as the soak deploys them: one execution environment each. */
export const FUNCTIONS = ["orders-api", "ledger-writer", "ledger-reader", "webhook-relay"] as const;
export type FunctionName = (typeof FUNCTIONS)[number];

/** Every fault the soak injects, in the order the report lists them. */
export const FAULTS = {
	"handler-throws": "the handler throws inside its transaction",
	"after-throws": "an `after` middleware throws",
	"early-response": "a `before` answers early after DB and HTTP were used",
	"timeout-query": "Middy's early timeout during a query",
	"timeout-http": "Middy's early timeout during an HTTP request",
	"kill-query": "the DB connection is KILLed mid-query",
	"db-restart": "the DB server restarts",
	"partner-reset": "the partner resets connections",
	"partner-close-idle": "the partner closes idle sockets",
	"partner-slow-body": "the partner is slower than bodyTimeout",
	"long-freeze": "frozen longer than the partner's keep-alive",
	"malformed-event": "a malformed event",
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
