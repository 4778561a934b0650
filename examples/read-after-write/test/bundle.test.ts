// The deployable artifact: handler.ts bundled by esbuild into one ES module (as `sam build` does). The writer and
// the reader run from it in two Lambda-like processes, frozen between invocations, against the real database.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { applySqlFile, createDatabaseUser, type TestDatabase } from "@middy-conn/test-harness";
import { useFunctionBundle, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AccountView } from "../handler.ts";

const example = fileURLToPath(new URL("..", import.meta.url));

const { admin, db } = useTestDatabase("raw_bundle", {
	seed: (_admin, db) => applySqlFile(db, join(example, "schema.sql")),
});
let readerDb: TestDatabase;

const settingsOf = (database: TestDatabase) => ({
	DB_HOST: database.host,
	DB_PORT: String(database.port),
	DB_USER: database.user,
	DB_PASSWORD: database.password,
	DB_NAME: database.database,
});

beforeAll(async () => {
	readerDb = await createDatabaseUser(admin, db, { suffix: "r", privileges: ["SELECT"] });
});

// Runs before the database fixture's afterAll (registered earlier), which drops the database.
afterAll(async () => {
	if (readerDb) await admin.query(`DROP USER IF EXISTS '${readerDb.user}'@'%'`);
});
// Registered last: its afterAll, first, ends the functions' processes before their users and database go.
const ledger = useFunctionBundle(join(example, "handler.ts"));

describe("read-after-write bundle", () => {
	it("runs the writer and a warm pool-mode reader that sees every committed entry", async () => {
		const bundle = await ledger.bundle();
		expect(bundle.bytes).toBeGreaterThan(0);

		const writer = await ledger.start({
			module: bundle.outfile,
			handler: "writer",
			functionName: "ledger-writer",
			env: settingsOf(db),
		});
		const reader = await ledger.start({
			module: bundle.outfile,
			handler: "reader",
			functionName: "ledger-reader",
			env: { ...settingsOf(readerDb), DB_MODE: "pool" },
		});

		let expected = 0;
		for (let round = 1; round <= 5; round++) {
			expect((await writer.invoke({ accountId: "acct-1", amountCents: round * 10 })).ok).toBe(true);
			expected += round * 10;
			// A reader invocation that fails inside its transaction, on the same warm process and pooled connection.
			const failed = await reader.invoke({ accountId: "nobody", statement: true });
			expect(failed).toMatchObject({ ok: false, error: { name: "AccountNotFound" } });
			const read = await reader.invoke<AccountView>({ accountId: "acct-1" });
			expect(read.result?.balanceCents).toBe(expected);
		}
		expect(reader.stats).toMatchObject({ invocations: 10, coldStarts: 1 });
		// The reader's statement (a transaction) works with a user that may only SELECT.
		const statement = await reader.invoke<AccountView>({ accountId: "acct-1", statement: true });
		expect(statement.result).toMatchObject({ balanceCents: expected, entries: 5 });
	});
});
