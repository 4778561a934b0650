// What the soak's four function drivers share: the soak's clock, a step's shape, and the checks every function
// that uses the database or a partner gets. Each driver (orders-api.ts, read-after-write.ts, webhook-relay.ts) says
// what event a step sends, which faults it sets up outside the process (on the partner, on the database, the
// freeze), and what it checks after the step and at the end.
//
// Bookkeeping is by unique names: every order has its own customer id, every SQS record its own message id,
// every early response its own audit id, every marker row its own token. At the end the database and the partner
// are asked what really happened to each, and that is compared with what the callers were told.

import {
	AUDIT_PATH,
	type InvocationOutcome,
	type PartnerApi,
	type PartnerPath,
} from "@middy-conn/test-harness";
import type { RowDataPacket } from "mysql2/promise";
import { type Directive, type FaultKind, type FunctionName, statementTag } from "../directive.ts";
import { type InvocationResult, isClearError, type Ledger, type Row } from "../invariants.ts";
import type { Step } from "../plan.ts";
import type { SoakAdmin, SoakPartners, SoakUsers } from "../world.ts";

/** The soak's clock: Lambda's and the partners' durations, scaled so that faults cost milliseconds. */
export const SETTINGS = {
	/** The partners close idle keep-alive sockets after this long, without saying so. */
	partnerKeepAliveMs: 500,
	/** bodyTimeout of the functions' HTTP pools (undici and the middleware: 10 s). */
	bodyTimeoutMs: 400,
	/** The functions' timeout. */
	functionTimeoutMs: 5000,
	/** orders-api/handler.ts: httpPool({ connections: 2 }). */
	ordersConnections: 2,
	/** webhook-relay: RELAY_CONCURRENCY, and so its pool's `connections`. */
	relayConcurrency: 3,
	/** read-after-write/handler.ts: the reader's pool, connectionLimit: 2. */
	readerPoolLimit: 2,
	/**
	 * timeout-query: the function's timeout, and the statement that outlasts it, by more than the second after
	 * which a timed-out invocation's statement still running on the server counts against the run. The functions'
	 * Middy fires its early timeout 250 ms before the deadline (timeoutEarlyInMillis: 250, as in the examples), so
	 * 300 ms into the invocation, well into the statement.
	 */
	queryTimeoutMs: 550,
	querySleepSeconds: 2,
	/** kill-query: the statement the soak KILLs the connection under. */
	killSleepSeconds: 3,
	/** timeout-http, orders-api: the webhook outlasts the waitUntil deadline (timeout minus the 500 ms reserve). */
	ordersTimeoutMs: 1300,
	ordersSlowWebhookMs: 4000,
	/** timeout-http, webhook-relay: the relay starts records with ≥ 2 s left; one record's answer never comes in time. */
	relayTimeoutMs: 2600,
	relaySlowMs: 6000,
	/** After a timeout, how long the statements of the invocation may still run on the server. */
	statementGraceMs: 1000,
	/** timeout-answers (ledger-batch, batch-lmi): the function's timeout, and how long the handler is held up. */
	batchTimeoutMs: 900,
	batchPauseMs: 2500,
	/** ledger-batch and batch-lmi: httpPool({ connections: 2 }) each, on one partner. */
	batchConnections: 2,
	/** batch-lmi: the Managed Instances environment's concurrency, and its pool's connectionLimit. */
	lmiMaxConcurrency: 8,
	lmiPoolLimit: 3,
	/** export-stream: httpPool({ connections: 2 }). */
	exportConnections: 2,
} as const;

/** Accounts the writer appends to and the reader reads; each starts with one entry, so none is ever unknown. */
export const ACCOUNTS = ["acct-0", "acct-1", "acct-2", "acct-3", "acct-4"];
/** Products of the soak's orders and relayed events. */
export const SKUS = ["TEA-GREEN-100G", "MUG-WHITE", "KETTLE-1L", "TEA-BLACK-250G", "STRAINER"];
/** The account the soak itself writes to before each state probe. */
export const PROBE_ACCOUNT = "probe";

/** Faults a function must absorb: the invocation succeeds as if nothing had happened. */
export const TRANSPARENT = new Set<FaultKind>([
	"partner-reset",
	"partner-close-idle",
	"partner-slow-body",
	"long-freeze",
]);

/** Rows where every request to the partner must get through (retries included): no fault, or one absorbed. */
export const mustDeliver = (row: Row): boolean =>
	row === "none" || row === "probe" || (row !== "db-restart" && TRANSPARENT.has(row));

export interface LogBook {
	/** Messages the function logged while serving this request id. */
	messages(requestId: string): string[];
}

/** A background task or an SQS record reported failed in the invocation's log (http-pool's logger). */
export const reportedInLog = (logs: LogBook, requestId: string) =>
	logs
		.messages(requestId)
		.some((message) => /background task/.test(message) && /failed|aborted/.test(message));

/**
 * The same, allowing the line up to `ms` to arrive: a function's log lines come through its stdout pipe, which the
 * soak may read after the invocation's answer (a separate socket) even though they were written before it.
 */
const reportedInLogWithin = async (logs: LogBook, requestId: string, ms: number): Promise<boolean> => {
	const deadline = performance.now() + ms;
	for (;;) {
		if (reportedInLog(logs, requestId)) return true;
		if (performance.now() >= deadline) return false;
		await new Promise((resolve) => setTimeout(resolve, 20));
	}
};

export interface SoakContext {
	ledger: Ledger;
	/** The admin connection (it waits for a restart of the server to be over). */
	admin(): SoakAdmin;
	users: SoakUsers;
	partners: SoakPartners;
	logs: LogBook;
	/**
	 * Timed-out invocations' statements: checked, gone within the grace, still running after it; and the time the
	 * invocations of the timeout faults had left when they returned (their timeout minus their duration).
	 */
	statements: { checked: number; ended: number; running: number; leftMs: number[] };
	/** early-background's marker rows: landed once, reported failed, checked. */
	marks: { landed: number; reported: number; checked: number };
}

/** One step as it runs. */
export interface StepRun {
	step: Step;
	/**
	 * The report's row. Read it after the invocation: a step that a DB restart overlapped is counted in that row
	 * (unless it carries a fault of its own).
	 */
	row: Row;
	/** Unique per step. */
	token: string;
	requestId: string;
	/** The step's own random numbers. */
	next: () => number;
	/**
	 * A DB restart ran while this invocation did, or this is the function's first invocation after one: a clear
	 * error is an acceptable outcome. Read it after the invocation.
	 */
	afterRestart: boolean;
}

export interface Prepared {
	event: unknown;
	directive: Directive;
	timeoutMs?: number;
	/** Runs while the invocation runs (the KILL); `settled()` says when the invocation is over. */
	during?: (settled: () => boolean) => Promise<void>;
	/** The invocation's outcome, as the caller saw it. */
	classify(outcome: InvocationOutcome): InvocationResult;
	/** Whether the outcome is the one the fault explains (a failure where a failure is expected, and so on). */
	expected(outcome: InvocationOutcome, result: InvocationResult): boolean;
	/** Invariants of this step: data, deliveries, connections. */
	check(outcome: InvocationOutcome): Promise<void>;
}

export interface Driver {
	readonly fn: FunctionName;
	prepare(run: StepRun): Promise<Prepared>;
	/** batch-lmi: after every invocation of a burst was checked (the environment is idle again). */
	afterBurst?(runs: StepRun[]): Promise<void>;
	/** After the run: what the database and the partner say happened, against what the callers were told. */
	reconcile(): Promise<void>;
	/** Figures for the report. */
	figures(): string[];
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
export const pick = <T>(next: () => number, items: readonly T[]): T =>
	items[Math.floor(next() * items.length)] as T;
export const integer = (next: () => number, min: number, max: number) =>
	min + Math.floor(next() * (max - min + 1));

/** Function errors (not HTTP answers): a clear error, or not. */
export const classifyFunctionError = (outcome: InvocationOutcome): InvocationResult =>
	outcome.ok ? "succeeded" : isClearError(outcome) ? "clear error" : "unclear";

/** Whether a fault is expected to fail the invocation (and fails it with a clear error). */
export const failureExpected = (fault: FaultKind | undefined) =>
	fault !== undefined &&
	!TRANSPARENT.has(fault) &&
	fault !== "early-response" &&
	fault !== "early-background" &&
	fault !== "concurrent";

/**
 * The default expectation: transparent faults and ordinary steps succeed; other faults may fail clearly (a fault
 * that did not bite, like a KILL that came after the statement, is not the middleware's doing).
 */
export const defaultExpected = (run: StepRun, result: InvocationResult): boolean => {
	if (result === "unclear") return false;
	if (result === "succeeded") return true;
	return failureExpected(run.step.fault) || run.afterRestart;
};

/** Finds the statement marked `marker` in the user's processlist and KILLs its connection. */
export const killWhenRunning =
	(context: SoakContext, user: string, marker: string, kills: { landed: number; missed: number }) =>
	async (settled: () => boolean) => {
		const deadline = Date.now() + 2500;
		while (Date.now() < deadline && !settled()) {
			const running = (await context.admin().processlist(user)).find((process) =>
				process.info?.includes(marker),
			);
			if (running) {
				await context
					.admin()
					.kill(running.id)
					.catch(() => {});
				kills.landed++;
				return;
			}
			await sleep(10);
		}
		kills.missed++;
	};

/** Waits (bounded) for a scoped user's connections to be back at zero; a leak if they are not. */
export const checkScopedBaseline = async (
	context: SoakContext,
	run: StepRun,
	fn: FunctionName,
	user: string,
) => {
	// A statement still running when Middy's timeout destroyed its socket ends on the server when it ends
	// (README: bound long statements with max_statement_time): allow for it, and no more.
	const linger = run.step.fault === "timeout-query" ? SETTINGS.querySleepSeconds * 1000 : 0;
	const left = await context.admin().settleConnections(user, 0, 1500 + linger);
	if (left !== 0) {
		context.ledger.violation(
			"leak",
			run.row,
			fn,
			`${left} connection(s) of the app user still open after the invocation (scoped mode: baseline 0)`,
		);
	}
	return left === 0;
};

/** The partner's sockets from one function never exceed its pool's `connections`. */
export const checkSockets = (
	context: SoakContext,
	run: StepRun,
	fn: FunctionName,
	partner: PartnerApi,
	limit: number,
) => {
	if (partner.peakOpenAtRequest > limit && !socketsReported.has(partner)) {
		socketsReported.add(partner);
		context.ledger.violation(
			"leak",
			run.row,
			fn,
			`the partner had ${partner.peakOpenAtRequest} sockets open when a request arrived (connections: ${limit})`,
		);
	}
};
const socketsReported = new WeakSet<PartnerApi>();

/**
 * Partner faults that happen while the function is frozen, before the invocation thaws it. `perRequest` sets up a
 * reset of the next request's connection: before the partner processed it, or after (the answer is lost).
 */
export const partnerFaultsWhileFrozen = async (
	run: StepRun,
	partner: PartnerApi,
	perRequest: (kind: "reset" | "reset-after") => void,
) => {
	switch (run.step.fault) {
		case "partner-reset": {
			// Every connection reset while the function is frozen, or the next request's, before or after it is processed.
			const variant = run.next();
			if (variant < 0.4) partner.server.resetAllConnections();
			else perRequest(variant < 0.7 ? "reset" : "reset-after");
			return;
		}
		case "partner-close-idle":
			partner.server.closeIdleConnections();
			return;
		case "long-freeze":
			await sleep(SETTINGS.partnerKeepAliveMs + 250);
			return;
		default:
	}
};

/**
 * The early response's background POST is not idempotent (no key, no `idempotent: true`): half the time the
 * partner processes it and then resets the connection. It must then be reported failed, and never sent again.
 */
export const earlyResponseFaults = (run: StepRun, partner: PartnerApi) => {
	if (run.step.fault === "early-response" && run.next() < 0.5)
		partner.failNext(AUDIT_PATH, { kind: "reset-after" });
};

export const directiveOf = (run: StepRun, sleepSeconds?: number): Directive => ({
	token: run.token,
	...(run.step.fault ? { fault: run.step.fault } : {}),
	...(run.step.probe ? { probe: run.step.probe } : {}),
	...(sleepSeconds === undefined ? {} : { sleepSeconds }),
	...(run.step.fault === "early-background" ? { background: backgroundVariant(run) } : {}),
});

/** Sleep and timeout of the query faults, for the functions that use the database. */
export const queryFault = (run: StepRun) =>
	run.step.fault === "timeout-query"
		? { sleepSeconds: SETTINGS.querySleepSeconds, timeoutMs: SETTINGS.queryTimeoutMs }
		: run.step.fault === "kill-query"
			? { sleepSeconds: SETTINGS.killSleepSeconds }
			: {};

/**
 * A background task of an invocation (a webhook, an early response's POST): delivered exactly once before the
 * invocation returned, or reported failed. A POST that reaches the partner only later was frozen mid-flight with
 * the process: on Lambda it lands in some later invocation, or never.
 */
export interface BackgroundTask {
	/** For messages: "webhook of order 12". */
	label: string;
	path: PartnerPath;
	key: string;
	requestId: string;
	row: Row;
	/**
	 * Sent with an idempotency key (and `idempotent: true`): after an answer was lost, a replay is by design, and
	 * the partner deduplicates. Without one, a second delivery is a duplicate, whatever happened to the first.
	 */
	idempotent: boolean;
	/** How many times the partner had processed it when the invocation returned. */
	processedAtReturn: number | undefined;
}

export const backgroundTask = (
	partner: PartnerApi,
	task: Omit<BackgroundTask, "processedAtReturn">,
): BackgroundTask => ({ ...task, processedAtReturn: partner.accepted(task.path).get(task.key) ?? 0 });

/**
 * Marker rows are written inside a transaction that an early response abandons: the middleware must roll it back,
 * so any marker the database shows at the end is a transaction that leaked past its invocation.
 */
export const reportVisibleMarkers = async (
	context: SoakContext,
	fn: FunctionName,
	what: string,
	table: string,
	column: string,
) => {
	const markers = await context
		.admin()
		.query<RowDataPacket[]>(`SELECT ${column} AS marker FROM ${table} WHERE ${column} LIKE 'marker-%'`);
	for (const { marker } of markers) {
		context.ledger.violation(
			"leak",
			"early-response",
			fn,
			`marker ${what} ${marker}, written in a transaction that was never committed, is visible`,
		);
	}
};

/** Delivered once, reported failed, lost or duplicated: what the partner and the logs say of each task. */
export const reconcileTasks = (
	context: SoakContext,
	fn: FunctionName,
	partner: PartnerApi,
	tasks: BackgroundTask[],
	tally: { delivered: number; reported: number; answerLost?: number },
	/** Rows whose fault explains a failed task; anywhere else a task must be delivered. */
	mayFail: (row: Row) => boolean = () => true,
) => {
	for (const task of tasks) {
		const processed = partner.accepted(task.path).get(task.key) ?? 0;
		const atReturn = task.processedAtReturn ?? processed;
		const lostAnswers = partner.unanswered(task.path).get(task.key) ?? 0;
		const replays = task.idempotent ? lostAnswers : 0;
		if (processed > 1 + replays) {
			context.ledger.violation(
				"duplicated",
				task.row,
				fn,
				`${task.label} processed ${processed} times (${lostAnswers} answer(s) lost; ${task.idempotent ? "idempotent" : "not idempotent: never to be replayed"})`,
			);
		} else if (atReturn >= 1) {
			if (lostAnswers > 0) tally.answerLost = (tally.answerLost ?? 0) + 1;
			tally.delivered++;
			context.ledger.task(task.row, "delivered");
		} else if (reportedInLog(context.logs, task.requestId)) {
			tally.reported++;
			context.ledger.task(task.row, "reported failed");
			if (!mayFail(task.row)) {
				context.ledger.violation("unexpected", task.row, fn, `${task.label} failed, and nothing explains it`);
			}
		} else if (processed >= 1) {
			context.ledger.violation(
				"lost",
				task.row,
				fn,
				`${task.label} reached the partner only after its invocation had returned (frozen mid-flight), and was not reported`,
			);
		} else {
			context.ledger.violation("lost", task.row, fn, `${task.label} neither delivered nor reported failed`);
		}
	}
};

/**
 * After a timeout: the invocation's statements (found by their tag) still running on the server. Polls until none
 * is left, at most `SETTINGS.statementGraceMs` after the invocation returned; what still runs then is counted,
 * and fails the run (Middy's timeout must stop the statement, not leave it running with its locks).
 */
export const checkStatementsEnded = async (
	context: SoakContext,
	run: StepRun,
	fn: FunctionName,
	returnedAt: number,
): Promise<void> => {
	const tag = statementTag(run.token);
	const deadline = returnedAt + SETTINGS.statementGraceMs;
	context.statements.checked++;
	for (;;) {
		const running = (await context.admin().processlist()).filter(
			(process) => process.command === "Query" && process.info?.includes(tag),
		);
		if (running.length === 0) {
			context.statements.ended++;
			return;
		}
		if (performance.now() >= deadline) {
			context.statements.running += running.length;
			// What the middleware said about it, if anything (its warning when the KILL could not be sent in time).
			const said = context.logs
				.messages(run.requestId)
				.find((message) => /could not stop the statement/.test(message));
			for (const process of running) {
				context.ledger.violation(
					"running",
					run.row,
					fn,
					`statement of the timed-out invocation ${run.requestId} still running ${Math.round(performance.now() - returnedAt)} ms after it returned (session ${process.id}, ${process.time} s): ${String(process.info).slice(0, 100)}${said ? `; the middleware logged: ${said.slice(0, 240)}` : ""}`,
				);
			}
			return;
		}
		await sleep(20);
	}
};

/**
 * early-background: the marker row the `before` handed to context.waitUntil landed once before the invocation
 * returned (the process is frozen now: what has not landed will not), or its failure was reported.
 */
export const checkMarkerLanded = async (
	context: SoakContext,
	run: StepRun,
	fn: FunctionName,
	database: string,
	outcome: InvocationOutcome,
) => {
	context.marks.checked++;
	const rows = await context
		.admin()
		.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${database}\`.soak_marks WHERE token = ?`, [
			run.token,
		]);
	const landed = Number(rows[0]?.n ?? 0);
	if (landed === 1) {
		context.marks.landed++;
		context.ledger.task(run.row, "delivered");
	} else if (landed > 1) {
		context.ledger.violation(
			"duplicated",
			run.row,
			fn,
			`the background marker row ${run.token} landed ${landed} times`,
		);
	} else if (failedVisibly(outcome) || (await reportedInLogWithin(context.logs, run.requestId, 1000))) {
		// Reported: the task's failure in the log, or the invocation's own failure (with `transaction: true` the marker
		// is committed with the invocation's transaction, and a COMMIT lost in a DB restart fails the invocation).
		context.marks.reported++;
		context.ledger.task(run.row, "reported failed");
		if (!run.afterRestart) {
			context.ledger.violation(
				"unexpected",
				run.row,
				fn,
				`the background write of marker ${run.token} failed, and nothing explains it`,
			);
		}
	} else {
		context.ledger.violation(
			"lost",
			run.row,
			fn,
			`the marker row ${run.token}, written with context.waitUntil before an early response, is not in the database and no failure was reported (the invocation ${JSON.stringify(outcome.ok ? { result: outcome.result } : { error: outcome.error }).slice(0, 200)}; the function logged for it: ${JSON.stringify(context.logs.messages(run.requestId)).slice(0, 300)})`,
		);
	}
};

/** The invocation failed where its caller sees it: an error, or an HTTP answer of 500 or more. */
const failedVisibly = (outcome: InvocationOutcome): boolean => {
	if (!outcome.ok) return true;
	const status = (outcome.result as { statusCode?: unknown } | undefined)?.statusCode;
	return typeof status === "number" && status >= 500;
};

/** early-background: which task the `before` hands to waitUntil. */
export const backgroundVariant = (run: StepRun): Directive["background"] =>
	run.step.fault === "early-background"
		? pick(run.next, ["promise", "function", "after-select"] as const)
		: undefined;
