import { fileURLToPath } from "node:url";
import { applySqlFile, databaseEnvironment, invokeInProcess } from "@middy-conn/test-harness";
import { useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { AccountView, ReadEvent, WriteEvent } from "../handler.ts";

const schema = fileURLToPath(new URL("../schema.sql", import.meta.url));

const { admin, db } = useTestDatabase("read_after_write", { seed: (_admin, db) => applySqlFile(db, schema) });

type Read = (event: ReadEvent) => Promise<AccountView>;

/** Environments loaded by the current test: their warm pools are closed after it, as if Lambda reclaimed them. */
const environments: Array<() => Promise<void>> = [];

/** Loads handler.ts afresh (a new execution environment) with the given reader mode. */
const loadFunctions = async (mode: "scoped" | "pool") => {
	vi.resetModules();
	process.env.DB_MODE = mode;
	const functions = await import("../handler.ts");
	const { closeMysqlPools } = await import("@middy-conn/mysql");
	environments.push(closeMysqlPools);
	return {
		write: (event: WriteEvent) => invokeInProcess<{ entryId: number }>(functions.writer, event),
		read: ((event) => invokeInProcess<AccountView>(functions.reader, event)) as Read,
	};
};

let account = 0;
const newAccount = () => `acct-${process.pid}-${++account}`;

/**
 * The seed's sequence on one warm reader: a write, a read, a reader invocation that fails inside its transaction
 * (an account with no entries), another write, and a read. Returns the last read's balance.
 */
const balanceAfterAFailedRead = async (write: (event: WriteEvent) => Promise<unknown>, read: Read) => {
	const accountId = newAccount();
	await write({ accountId, amountCents: 100 });
	expect((await read({ accountId })).balanceCents).toBe(100);
	await expect(read({ accountId: "nobody", statement: true })).rejects.toThrow(
		"account nobody has no entries",
	);
	await write({ accountId, amountCents: 50 });
	return (await read({ accountId })).balanceCents;
};

beforeAll(() => {
	Object.assign(process.env, databaseEnvironment(db));
});

afterEach(async () => {
	await Promise.all(environments.splice(0).map((close) => close()));
});

describe("read-after-write: the control (seed 003)", () => {
	it("a module-level connection keeps reading the snapshot of a transaction that a failed invocation left open", async () => {
		const { write } = await loadFunctions("scoped");
		const { naiveReader, closeNaiveReader } = await import("./naive-reader.ts");
		try {
			// The writer committed 150 in total; the naive reader still answers 100, and will for as long as the
			// instance lives.
			expect(await balanceAfterAFailedRead(write, naiveReader)).toBe(100);
		} finally {
			await closeNaiveReader();
		}
	});
});

describe.each(["scoped", "pool"] as const)("read-after-write: the reader in %s mode", (mode) => {
	afterEach(async () => {
		// Scoped: nothing stays open. Pool: at most the pool's limit stays warm, and no more.
		const expected = mode === "scoped" ? 0 : 2;
		expect(await admin.settleConnections(db.user, 0, 500)).toBeLessThanOrEqual(expected);
	});

	it("sees every entry the writer committed, on the same warm instance, after a failed invocation", async () => {
		const { write, read } = await loadFunctions(mode);
		expect(await balanceAfterAFailedRead(write, read)).toBe(150);
	});

	it("reads a statement whose balance and entries agree", async () => {
		const { write, read } = await loadFunctions(mode);
		const accountId = newAccount();
		for (const amountCents of [500, -120, 75]) await write({ accountId, amountCents });
		const view = await read({ accountId, statement: true });
		expect(view).toMatchObject({ accountId, balanceCents: 455, entries: 3 });
		expect(view.latest?.map((entry) => entry.amountCents)).toEqual([75, -120, 500]);
	});
});

describe("read-after-write: bad events", () => {
	it("the writer rejects a bad event with a clear error and writes nothing", async () => {
		const { write } = await loadFunctions("scoped");
		const before = await admin.query<import("mysql2").RowDataPacket[]>(
			`SELECT COUNT(*) AS n FROM \`${db.database}\`.ledger_entries`,
		);
		await expect(write({ accountId: "a b", amountCents: 1 })).rejects.toThrow(/accountId must be/);
		await expect(write({ accountId: "a", amountCents: 1.5 })).rejects.toThrow(
			"amountCents must be a non-zero integer",
		);
		await expect(write({} as WriteEvent)).rejects.toMatchObject({ name: "InvalidEvent" });
		const after = await admin.query<import("mysql2").RowDataPacket[]>(
			`SELECT COUNT(*) AS n FROM \`${db.database}\`.ledger_entries`,
		);
		expect(after[0]?.n).toBe(before[0]?.n);
		expect(await admin.settleConnections(db.user, 0)).toBe(0);
	});
});
