// Close: the end of the invocation's hold on its connection, on every path.
//
// - A finished success with the `transaction` option: COMMIT, bounded by the time the invocation has left. A
//   failed COMMIT fails the invocation. An early response is an answer too (a middleware chose it; what ran
//   before it, background tasks included, ran to its end): it commits as well.
// - Work not finished (Middy's timeout, or work still in flight when teardown began): never COMMIT. A busy
//   connection is given up: destroyed, and its statement stopped on the server (cancel.ts).
// - A dead connection: destroyed; there is nothing to talk to.
// - Otherwise the graceful end, which also rolls back whatever is still open. Scoped: QUIT, awaited until the
//   server has closed the socket, so that the session is gone before Lambda freezes the process (bounded by
//   `closeTimeout`; past it the connection is destroyed). Pool: COM_RESET_CONNECTION sent and the connection
//   released at once; the next acquire awaits the reset's answer (below). Under server pressure, QUIT instead
//   (server-pressure.ts).
import type { Request } from "@middy/core";
import { type InvocationEnd, type Logger, remainingTimeInMillis, settleWithin } from "@middy-conn/lifecycle";
import type { Lease } from "./acquire.ts";
import { commitError, destroyedError, unfinishedError } from "./errors.ts";
import {
	destroyHard,
	isDead,
	isFatal,
	releaseConnection,
	sendReset,
	socketClosed,
} from "./mysql2-adapter.ts";
import type { Settings } from "./options.ts";
import type { PendingReset, WarmPool } from "./pool-cache.ts";
import { loadCheckDue, readLoad } from "./server-pressure.ts";
import type { MysqlConnectionStats } from "./telemetry.ts";

/** What close needs to know about the connection's use in this invocation. */
export interface Closing {
	readonly lease: Lease;
	readonly settings: Settings;
	readonly logger: Logger;
	readonly stats: MysqlConnectionStats;
	readonly request: Request;
	/** A transaction is open (the middleware's, or one the handler began). */
	readonly transactionOpen: boolean;
	/** The middleware's BEGIN, if it is still on its way. */
	readonly begin: Promise<void> | undefined;
	/** The connection died during the invocation. */
	readonly lost: unknown;
	/** Statements are in flight on it. */
	readonly busy: boolean;
	/** Destroys the connection now, and stops its statement on the server if one is running. */
	giveUp(reason: string): void;
	/** Stops listening to the connection (it goes back to the pool). */
	detach(): void;
}

/** The invocation gave an answer (its own, or a middleware's early one), which a COMMIT would stand behind. */
export const isAnswered = (end: InvocationEnd): boolean =>
	end.kind === "success" || end.kind === "early-response";

export const closeLease = async (closing: Closing, end: InvocationEnd): Promise<void> => {
	const { lease, settings, logger, stats } = closing;
	const managed = settings.transaction !== false && closing.transactionOpen;
	const answered = isAnswered(end);
	if (closing.transactionOpen) stats.transaction = "rolled-back";
	const { target, secrets } = lease.resolved;

	if (end.kind === "timeout" || closing.lost || isDead(lease.core)) {
		closing.giveUp(end.kind === "timeout" ? "the invocation timed out" : "the connection died");
		// The handler succeeded, but the connection died before the middleware could COMMIT: the server rolled
		// the transaction back, and the invocation must not report a success whose writes are gone.
		if (answered && managed) {
			const cause = closing.lost ?? new Error("the connection was closed before COMMIT");
			throw commitError(cause, target, secrets, true);
		}
		return;
	}
	// The handler did not finish: what it did is rolled back, and a success must not claim it was kept.
	const refuseCommit = answered && managed && end.unfinished;
	if (end.unfinished && closing.busy) {
		closing.giveUp("work was still in flight when the invocation ended");
		if (refuseCommit) throw unfinishedError(target);
		return;
	}
	const context = closing.request.context as { getRemainingTimeInMillis?: () => number };
	if (answered && managed && !refuseCommit) {
		// COMMIT is the invocation's own work, bounded only by the time the invocation has left.
		const commit = await settleWithin(
			(closing.begin ?? Promise.resolve()).then(() => lease.connection.commit()),
			remainingTimeInMillis(context, 10, Number.POSITIVE_INFINITY),
		);
		if (!commit.ok) {
			// No answer (or a lost connection): the outcome is unknown. An error answer: nothing was committed,
			// and destroying the connection rolls back whatever is left.
			const error = commit.timedOut ? new Error("no answer before the invocation's deadline") : commit.error;
			const known = !commit.timedOut && !isFatal(error) && !isDead(lease.core);
			closing.giveUp("COMMIT failed");
			throw commitError(error, target, secrets, known);
		}
		stats.transaction = "committed";
	} else if (answered && closing.transactionOpen && !managed) {
		logger.warn(
			"@middy-conn/mysql: a transaction begun with beginTransaction() was still open when the invocation ended; it was rolled back",
		);
	}
	await endSession(
		closing,
		Math.min(settings.closeTimeout, remainingTimeInMillis(context, 10, settings.closeTimeout)),
	);
	if (refuseCommit) throw unfinishedError(target);
};

// The graceful end, which rolls back an open transaction by itself: COM_RESET_CONNECTION (pool) and the end of
// the session (scoped) both do, so no separate ROLLBACK round trip is needed.
const endSession = async (closing: Closing, budget: number): Promise<void> => {
	const { lease, logger, settings } = closing;
	if (!lease.pooled) return quit(closing, budget);
	// At fleet scale a pool stops keeping connections warm while the server is near full (server-pressure.ts).
	const pressure = settings.serverPressure;
	const load = lease.pool?.load;
	if (pressure && load) {
		if (loadCheckDue(load, pressure)) {
			const read = await settleWithin(readLoad(lease.connection, load, pressure), budget);
			if (!read.ok) {
				closing.giveUp("the server's load could not be read in time");
				return;
			}
		}
		if (load.high) return quit(closing, budget);
	}
	const pool = lease.pool;
	if (!pool) return quit(closing, budget);
	// With the compressed protocol, mysql2 before 3.24 deflates every packet on libuv's thread pool: the reset would
	// reach the socket only later, perhaps after Lambda froze the process, and the session's locks would be held for
	// the whole freeze. Then the reset is awaited here, as the invocation's own work.
	if (lease.resolved.driver.compress === true) {
		const reset = await settleWithin(sendReset(lease.core), budget);
		if (!reset.ok) {
			const code = reset.timedOut ? "TIMEOUT" : (reset.error as { code?: string } | undefined)?.code;
			logger.warn("@middy-conn/mysql: could not reset the connection; destroyed it instead", { code });
			closing.giveUp("reset failed");
			return;
		}
		release(closing, pool);
		return;
	}
	// COM_RESET_CONNECTION is sent now, and the connection goes back to the pool at once: its answer is awaited by
	// the next acquire of this connection, not by this invocation. The reset is on the wire before the invocation
	// returns (the socket write is immediate), so the server rolls back, frees locks and drops temporary tables
	// within a round trip, frozen process or not; mysql2 runs a connection's commands strictly in order, and the
	// next invocation sends nothing before the answer has come (acquire.ts). A reset that fails destroys the
	// connection, and no invocation gets it. The round trip leaves the invocation's critical path.
	const core = lease.core;
	const pending: PendingReset = {
		clean: undefined,
		answered: sendReset(core).then(
			() => {
				pending.clean = true;
				return true;
			},
			(error: unknown) => {
				pending.clean = false;
				logger.warn("@middy-conn/mysql: could not reset a pooled connection; destroyed it", {
					code: (error as { code?: string } | undefined)?.code,
				});
				destroyHard(core, destroyedError("its reset failed"));
				return false;
			},
		),
	};
	pool.resets.set(core, pending);
	release(closing, pool);
};

// Back to the pool: no longer the invocation's, and idle from now on (acquire.ts checks for how long).
const release = (closing: Closing, pool: WarmPool): void => {
	const { lease, stats } = closing;
	closing.detach();
	pool.releasedAt.set(lease.core, Date.now());
	releaseConnection(lease.connection);
	stats.closed = "released";
};

// QUIT, then wait for the server to close the socket: the session is gone before Lambda freezes the process. A
// pooled connection leaves its pool first (mysql2's `gracefulEnd`, set by resolveConfig in pool mode).
const quit = async (closing: Closing, budget: number): Promise<void> => {
	const { lease, stats } = closing;
	const closed = socketClosed(lease.core);
	const ended = await settleWithin(
		lease.connection.end().then(() => closed),
		budget,
	);
	if (!ended.ok) {
		closing.giveUp("QUIT was not answered in time");
		return;
	}
	stats.closed = "ended";
};
