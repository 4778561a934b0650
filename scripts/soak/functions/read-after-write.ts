// read-after-write: ledger-writer (scoped, autocommitted INSERTs) and ledger-reader (pool mode, SELECT-only user).
//
// The writer appends to five accounts; what its callers were told says which entries must be in the ledger (an
// answer, or an `after` that threw once the INSERT was autocommitted) and which must not (a timeout or a KILL before
// the INSERT, an early response). The reader, warm in pool mode, must never read less than what was committed
// before its read began, whatever the invocation before it left on the connection; after every fault, a state
// probe reads what its connection carries (user variable, open transaction, snapshot). The pool never holds more
// connections than its limit, and the writer's user is back at 0 connections after each invocation.
import type { ResultSetHeader, RowDataPacket } from "mysql2/promise";
import { type StateProbe, sleepMarker } from "../directive.ts";
import type { Row } from "../invariants.ts";
import {
	ACCOUNTS,
	checkMarkerLanded,
	checkScopedBaseline,
	classifyFunctionError,
	type Driver,
	defaultExpected,
	directiveOf,
	integer,
	killWhenRunning,
	PROBE_ACCOUNT,
	pick,
	queryFault,
	reportVisibleMarkers,
	SETTINGS,
	type SoakContext,
} from "./common.ts";

/** What the ledger must hold per account: confirmed writes (min) and writes whose outcome is unknown (max). */
export class Balances {
	readonly #min = new Map<string, number>();
	readonly #max = new Map<string, number>();

	add(account: string, cents: number, certain: boolean) {
		if (certain) this.#min.set(account, (this.#min.get(account) ?? 0) + cents);
		this.#max.set(account, (this.#max.get(account) ?? 0) + cents);
	}

	min(account: string): number {
		return this.#min.get(account) ?? 0;
	}

	max(account: string): number {
		return this.#max.get(account) ?? 0;
	}

	accounts(): string[] {
		return [...this.#max.keys()];
	}
}

const malformedWrites = [
	{},
	{ accountId: "a b", amountCents: 5 },
	{ accountId: "acct-0", amountCents: 1.5 },
	{ accountId: "acct-0" },
	"acct-0",
	null,
];
const malformedReads = [{}, { accountId: "../acct-0" }, null, 42];

export const ledgerWriter = (context: SoakContext, balances: Balances): Driver => {
	const user = context.users.writer.user;
	const kills = { landed: 0, missed: 0 };
	let baselineChecks = 0;
	let baselineHeld = 0;
	return {
		fn: "ledger-writer",
		async prepare(run) {
			const fault = run.step.fault;
			const { sleepSeconds, timeoutMs } = queryFault(run);
			const accountId = pick(run.next, ACCOUNTS);
			const amountCents = integer(run.next, 1, 500);
			const event =
				fault === "malformed-event" ? pick(run.next, malformedWrites) : { accountId, amountCents };
			return {
				event,
				directive: directiveOf(run, sleepSeconds),
				...(timeoutMs === undefined ? {} : { timeoutMs }),
				...(fault === "kill-query"
					? { during: killWhenRunning(context, user, sleepMarker("kill-query", run.token), kills) }
					: {}),
				classify: classifyFunctionError,
				expected: (outcome, result) =>
					fault === "malformed-event"
						? outcome.error?.name === "InvalidEvent"
						: fault === "early-response" || fault === "early-background"
							? (outcome.result as { early?: boolean } | undefined)?.early === true
							: defaultExpected(run, result),
				async check(outcome) {
					if (fault !== "malformed-event") {
						// The INSERT is autocommitted by the handler: an answer (or an after that throws afterwards) means it
						// is in; a failure before the handler's INSERT (timeout, KILL, early response) means it is not;
						// anything else might be either.
						const entry = (outcome.result as { entryId?: number } | undefined)?.entryId;
						if (outcome.ok && entry !== undefined) balances.add(accountId, amountCents, true);
						else if (outcome.error?.name === "SoakFault") balances.add(accountId, amountCents, true);
						else if (
							!(
								fault && ["timeout-query", "kill-query", "early-response", "early-background"].includes(fault)
							)
						) {
							balances.add(accountId, amountCents, false);
						}
					}
					if (fault === "early-background") {
						await checkMarkerLanded(context, run, "ledger-writer", context.users.writer.database, outcome);
					}
					baselineChecks++;
					if (await checkScopedBaseline(context, run, "ledger-writer", user)) baselineHeld++;
				},
			};
		},
		async reconcile() {
			const { database } = context.users.writer;
			await reportVisibleMarkers(
				context,
				"ledger-writer",
				"entry",
				`\`${database}\`.ledger_entries`,
				"account_id",
			);
			const sums = await context
				.admin()
				.query<RowDataPacket[]>(
					`SELECT account_id AS a, SUM(amount_cents) AS total FROM \`${database}\`.ledger_entries GROUP BY account_id`,
				);
			const totals = new Map(sums.map((row) => [String(row.a), Number(row.total)]));
			for (const account of balances.accounts()) {
				const total = totals.get(account) ?? 0;
				if (total < balances.min(account)) {
					context.ledger.violation(
						"lost",
						"none",
						"ledger-writer",
						`${account} holds ${total} cents, confirmed writes add up to ${balances.min(account)}`,
					);
				} else if (total > balances.max(account)) {
					context.ledger.violation(
						"leak",
						"none",
						"ledger-writer",
						`${account} holds ${total} cents, more than every write that may have committed (${balances.max(account)})`,
					);
				}
			}
		},
		figures: () => [
			`ledger-writer: app user back to 0 DB connections after ${baselineHeld}/${baselineChecks} invocations; KILLs ${kills.landed} landed, ${kills.missed} missed`,
		],
	};
};

/** The reader's driver also checks its pool between steps (the soak's sampler). */
export interface ReaderDriver extends Driver {
	checkPool(row: Row): Promise<void>;
}

export const ledgerReader = (context: SoakContext, balances: Balances): ReaderDriver => {
	const user = context.users.reader.user;
	const kills = { landed: 0, missed: 0 };
	const reads = { fresh: 0, total: 0 };
	const probes = { clean: 0, total: 0 };
	let peak = 0;
	/** The row of the last fault, to which a state probe's finding belongs. */
	let lastFaultRow: Row = "none";

	/** The reader's connections, as the server counts them, without statements still ending after a timeout. */
	const connections = async () =>
		(await context.admin().processlist(user)).filter(
			(process) => !process.info?.includes("soak-timeout-query"),
		).length;
	const checkPool = async (row: Row) => {
		const count = await connections();
		peak = Math.max(peak, count);
		if (count > SETTINGS.readerPoolLimit) {
			context.ledger.violation(
				"leak",
				row,
				"ledger-reader",
				`${count} pooled connections open (connectionLimit: ${SETTINGS.readerPoolLimit})`,
			);
		}
	};

	return {
		fn: "ledger-reader",
		async prepare(run) {
			const fault = run.step.fault;
			const { sleepSeconds, timeoutMs } = queryFault(run);
			if (fault) lastFaultRow = run.row;
			let event: unknown;
			let probeEntry: number | undefined;
			const accountId = pick(run.next, ACCOUNTS);
			if (run.step.probe === "state") {
				// Committed just now, by someone else: a connection still inside an old snapshot would not see it.
				const inserted = await context
					.admin()
					.query<ResultSetHeader>(
						`INSERT INTO \`${context.users.reader.database}\`.ledger_entries (account_id, amount_cents) VALUES (?, ?)`,
						[PROBE_ACCOUNT, 1],
					);
				balances.add(PROBE_ACCOUNT, 1, true);
				probeEntry = inserted.insertId;
				event = { accountId: PROBE_ACCOUNT };
			} else if (fault === "malformed-event") event = pick(run.next, malformedReads);
			else if (fault === "handler-throws") event = { accountId: `nobody-${run.token}`, statement: true };
			else event = { accountId, statement: run.next() < 0.3 };
			const committedBefore = balances.min(accountId);
			return {
				event,
				directive: directiveOf(run, sleepSeconds),
				...(timeoutMs === undefined ? {} : { timeoutMs }),
				...(fault === "kill-query"
					? { during: killWhenRunning(context, user, sleepMarker("kill-query", run.token), kills) }
					: {}),
				classify: classifyFunctionError,
				expected: (outcome, result) =>
					fault === "malformed-event"
						? outcome.error?.name === "InvalidEvent"
						: fault === "handler-throws"
							? outcome.error?.name === "AccountNotFound"
							: defaultExpected(run, result),
				async check(outcome) {
					if (probeEntry !== undefined) {
						probes.total++;
						const probe = (outcome.result as { probe?: StateProbe } | undefined)?.probe;
						if (!probe) {
							if (!run.afterRestart) {
								context.ledger.violation(
									"unexpected",
									run.row,
									"ledger-reader",
									`the state probe failed: ${outcome.error?.message}`,
								);
							}
						} else if (
							probe.marker !== null ||
							probe.inTransaction !== 0 ||
							(probe.maxEntryId ?? 0) < probeEntry
						) {
							context.ledger.violation(
								"leak",
								lastFaultRow,
								"ledger-reader",
								`a pooled connection carried session state into the next invocation: user variable ${probe.marker}, in transaction ${probe.inTransaction}, newest entry seen ${probe.maxEntryId} (committed ${probeEntry})`,
							);
						} else probes.clean++;
					}
					const view = outcome.result as { balanceCents?: number; accountId?: string } | undefined;
					if (outcome.ok && typeof view?.balanceCents === "number" && view.accountId === accountId) {
						reads.total++;
						if (view.balanceCents >= committedBefore) reads.fresh++;
						else {
							context.ledger.violation(
								"leak",
								run.row,
								"ledger-reader",
								`stale read: ${accountId} read ${view.balanceCents} cents, ${committedBefore} were committed before the read began`,
							);
						}
					}
					await checkPool(run.row);
				},
			};
		},
		async reconcile() {},
		figures: () => [
			`ledger-reader (pool mode): at most ${peak} pooled connections (connectionLimit: ${SETTINGS.readerPoolLimit}); ` +
				`${reads.fresh}/${reads.total} reads fresh; ${probes.clean}/${probes.total} state probes clean (no user variable, transaction or snapshot carried over); KILLs ${kills.landed} landed, ${kills.missed} missed`,
		],
		checkPool,
	};
};
