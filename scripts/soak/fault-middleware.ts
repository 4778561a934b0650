// The faults that happen inside a function, as a Middy middleware composed after the example's own (runs inside
// the execution environments, bundled into the fixture). It does what application code and other middlewares do
// to the connections the middlewares manage, when the soak's directive for the invocation asks for it:
//
// - early-response: its `before` uses the database (a transaction with a marker row, or a user variable and a
//   snapshot) and HTTP (a response body left unread, a background POST that is not idempotent), then answers
//   early. Middy then skips every `after`.
// - after-throws: its `after` throws once the handler has succeeded.
// - early-background: its `before` hands a write of a marker row (soak_marks) to context.waitUntil, and answers
//   early at once: the write must land before the invocation returns.
// - timeout-query, kill-query: the handler's first statement is preceded by a `SELECT SLEEP(n)` on the same
//   connection, inside the handler, so that Middy's early timeout fires (or the soak KILLs the connection) while a
//   query runs.
// - every invocation: each statement of context.db is prefixed with the invocation's tag (`/* soak:<token> */`),
//   so that the soak finds them in the server's processlist (a timed-out invocation's statement still running).
// - the state probe: reads what the connection carries (user variable, open transaction, snapshot) and answers
//   early with it.
// - a streamed response (export-stream): its `after` (the first to run, being registered last) hands the body's
//   source, before the middlewares guard it, to `onBodySource`: the fixture records when the source has been read
//   to its end, so that the soak knows whether a response stream broke before or after that.
//
// The handler itself is the example's, unchanged. Its other faults (a statement the database refuses, an unknown
// account, a malformed event) come from the event.
import { Readable } from "node:stream";
import type { MiddlewareObj, Request } from "@middy/core";
import type { HttpPoolContext } from "@middy-conn/http-pool";
import type { InvocationDb } from "@middy-conn/mysql";
import type { RowDataPacket } from "mysql2";
import {
	type Directive,
	type FunctionName,
	markerName,
	type StateProbe,
	sleepMarker,
	statementTag,
} from "./directive.ts";

/** The error the soak's own `after` throws: named, so that the soak knows it when it comes back. */
export class SoakFault extends Error {
	override name = "SoakFault";
}

type SoakContext = Partial<HttpPoolContext> & { db?: InvocationDb };

export interface FaultMiddlewareOptions {
	functionName: FunctionName;
	/** The invocation's directive, set by the fixture before the example's handler runs. */
	directiveOf(request: Request): Directive | undefined;
	/** Sent as a bearer token on the soak's own partner requests (a secret: it must never be seen in a log). */
	partnerToken: string;
	/** The partner's path for those requests. */
	auditPath: string;
	/** A streamed response's body, as the handler returned it (the source the middlewares' guard will read). */
	onBodySource?(request: Request, source: Readable): void;
}

/** Uses the invocation's database the way a handler that then fails would: a transaction, or session state. */
const useDatabase = async (functionName: FunctionName, db: InvocationDb, token: string) => {
	const marker = markerName(token);
	switch (functionName) {
		case "orders-api":
			await db.beginTransaction();
			await db.query("INSERT INTO orders (customer_id, currency, total_cents) VALUES (?, ?, ?)", [
				marker,
				"EUR",
				0,
			]);
			return;
		case "ledger-writer":
			await db.beginTransaction();
			await db.query("INSERT INTO ledger_entries (account_id, amount_cents) VALUES (?, ?)", [marker, 1]);
			return;
		case "ledger-reader":
			// A SELECT-only user: session state and a REPEATABLE READ snapshot are what it can leave behind.
			await db.query("SET @soak_marker = ?", [marker]);
			await db.beginTransaction();
			await db.query("SELECT COUNT(*) AS entries FROM ledger_entries");
			return;
		default:
	}
};

/** Uses the invocation's HTTP pool: a body left unread, and a background POST that must not be replayed. */
const useHttp = async (context: SoakContext, token: string, options: FaultMiddlewareOptions) => {
	const { http, waitUntil } = context;
	if (!http || !waitUntil) return;
	// The body is never read: the end of the invocation must drain or abort it, whatever path it ends on.
	await http.request({ path: "/json", method: "GET" });
	waitUntil(
		http
			.request({
				path: options.auditPath,
				method: "POST",
				headers: {
					authorization: `Bearer ${options.partnerToken}`,
					"content-type": "application/json",
					"x-request-id": `early-${token}`,
				},
				body: JSON.stringify({ type: "soak.early-response", token }),
			})
			.then(async ({ statusCode, body }) => {
				await body.dump();
				if (statusCode !== 202) throw new Error(`the audit endpoint answered ${statusCode}`);
			}),
	);
};

/** The early response each function's caller can make sense of. */
const earlyResponse = (functionName: FunctionName, event: unknown) => {
	switch (functionName) {
		case "orders-api":
			return {
				statusCode: 202,
				headers: { "content-type": "application/json" },
				body: JSON.stringify({ message: "accepted early, not processed" }),
			};
		case "export-stream":
			// Streaming mode: Middy writes an HTTP response's string body to the response stream.
			return {
				statusCode: 202,
				headers: { "content-type": "application/json" },
				body: JSON.stringify({ message: "accepted early, not exported" }),
			};
		case "webhook-relay": {
			// Nothing was relayed: every record goes back to the queue.
			const records = (event as { Records?: Array<{ messageId: string }> }).Records ?? [];
			return { batchItemFailures: records.map((record) => ({ itemIdentifier: record.messageId })) };
		}
		default:
			return { early: true };
	}
};

/** Prefixes every statement of context.db with the invocation's tag (a SQL comment). */
const tagStatements = (context: SoakContext, token: string) => {
	const db = context.db;
	if (!db) return;
	const tag = statementTag(token);
	const tagged = (sql: unknown): unknown => {
		if (typeof sql === "string") return `${tag} ${sql}`;
		const options = sql as { sql?: unknown } | null;
		if (options && typeof options === "object" && typeof options.sql === "string") {
			return { ...options, sql: `${tag} ${options.sql}` };
		}
		return sql;
	};
	context.db = {
		...db,
		query: ((sql: unknown, values?: unknown) =>
			db.query(tagged(sql) as string, values as never)) as InvocationDb["query"],
		execute: ((sql: unknown, values?: unknown) =>
			db.execute(tagged(sql) as string, values as never)) as InvocationDb["execute"],
	};
};

/**
 * early-background: a marker row written in the background (context.waitUntil), and an early answer at once. The
 * write must land before the invocation returns (or be reported failed): the soak counts the marker rows.
 */
const backgroundWrite = async (context: SoakContext, directive: Directive, functionName: FunctionName) => {
	const { db, waitUntil } = context;
	if (!db || !waitUntil) return;
	const insert = () =>
		db.query("INSERT INTO soak_marks (token, fn) VALUES (?, ?)", [directive.token, functionName]);
	switch (directive.background) {
		case "function":
			// The connection opens during teardown, after the early response began.
			waitUntil(async function soakMarker() {
				await new Promise((resolve) => setTimeout(resolve, 5));
				await insert();
			});
			return;
		case "after-select":
			await db.query("SELECT 1 AS warm");
			waitUntil(insert());
			return;
		default:
			waitUntil(insert());
	}
};

/** Puts `SELECT SLEEP(n)` before the handler's first statement, on the invocation's own connection. */
const slowFirstStatement = (context: SoakContext, directive: Directive) => {
	const db = context.db;
	if (!db || directive.fault === undefined) return;
	const marker = sleepMarker(directive.fault, directive.token);
	let sleeping: Promise<unknown> | undefined;
	const first = () => {
		sleeping ??= db.query("SELECT SLEEP(?) AS slept, ? AS soak", [directive.sleepSeconds ?? 1, marker]);
		return sleeping;
	};
	const afterFirst =
		<A extends unknown[], R>(method: (...args: A) => Promise<R>) =>
		async (...args: A): Promise<R> => {
			await first();
			return method(...args);
		};
	const slowed: InvocationDb = {
		query: afterFirst(db.query) as InvocationDb["query"],
		execute: afterFirst(db.execute) as InvocationDb["execute"],
		beginTransaction: afterFirst(db.beginTransaction),
		commit: afterFirst(db.commit),
		rollback: afterFirst(db.rollback),
		connection: afterFirst(db.connection),
	};
	context.db = slowed;
};

const probeState = async (db: InvocationDb): Promise<StateProbe> => {
	const [rows] = await db.query<RowDataPacket[]>(
		"SELECT @soak_marker AS marker, @@in_transaction AS inTransaction, (SELECT MAX(id) FROM ledger_entries) AS maxEntryId",
	);
	const row = rows[0] as RowDataPacket | undefined;
	return {
		marker: row?.marker === null || row?.marker === undefined ? null : String(row.marker),
		inTransaction: Number(row?.inTransaction),
		maxEntryId: row?.maxEntryId === null || row?.maxEntryId === undefined ? null : Number(row.maxEntryId),
	};
};

export const faultMiddleware = (options: FaultMiddlewareOptions): MiddlewareObj => ({
	before: async (request) => {
		const directive = options.directiveOf(request);
		const context = request.context as unknown as SoakContext;
		if (!directive) return undefined;
		tagStatements(context, directive.token);
		if (directive.probe === "state" && context.db) return { probe: await probeState(context.db) };
		switch (directive.fault) {
			case "early-response":
				if (context.db) await useDatabase(options.functionName, context.db, directive.token);
				await useHttp(context, directive.token, options);
				return earlyResponse(options.functionName, request.event);
			case "early-background":
				await backgroundWrite(context, directive, options.functionName);
				return earlyResponse(options.functionName, request.event);
			case "timeout-query":
			case "kill-query":
				slowFirstStatement(context, directive);
				return undefined;
			default:
				return undefined;
		}
	},
	after: (request) => {
		const body = (request.response as { body?: unknown } | null | undefined)?.body;
		if (options.onBodySource && body instanceof Readable) options.onBodySource(request, body);
		if (options.directiveOf(request)?.fault === "after-throws") {
			throw new SoakFault("an after middleware threw after the handler succeeded (injected by the soak)");
		}
	},
});
