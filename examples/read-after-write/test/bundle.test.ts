// The deployable artifact: handler.ts bundled by esbuild into one ES module (as `sam build` does). The writer and
// the reader run from it in two Lambda-like processes, frozen between invocations, against the real database.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
	applySqlFile,
	bundleHandler,
	createDatabaseUser,
	describeBundle,
	type ExecutionEnvironment,
	startExecutionEnvironment,
	type TestDatabase,
} from "@middy-conn/test-harness";
import { useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AccountView } from "../handler.ts";

const example = fileURLToPath(new URL("..", import.meta.url));
const work = mkdtempSync(join(tmpdir(), "middy-conn-read-after-write-"));

const { admin, db } = useTestDatabase("raw_bundle", {
	seed: (_admin, db) => applySqlFile(db, join(example, "schema.sql")),
});
let readerDb: TestDatabase;
const environments: ExecutionEnvironment[] = [];

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

// Runs before the fixture's afterAll (registered later), which drops the database.
afterAll(async () => {
	await Promise.all(environments.map((environment) => environment.kill()));
	if (readerDb) await admin.query(`DROP USER IF EXISTS '${readerDb.user}'@'%'`);
	rmSync(work, { recursive: true, force: true });
});

describe("read-after-write bundle", () => {
	it("runs the writer and a warm pool-mode reader that sees every committed entry", async () => {
		const bundle = await bundleHandler({
			entry: join(example, "handler.ts"),
			outfile: join(work, "handler.mjs"),
		});
		console.log(`bundle size: ${describeBundle(bundle)}`);
		expect(bundle.bytes).toBeGreaterThan(0);

		const writer = await startExecutionEnvironment({
			module: bundle.outfile,
			handler: "writer",
			functionName: "ledger-writer",
			env: settingsOf(db),
		});
		const reader = await startExecutionEnvironment({
			module: bundle.outfile,
			handler: "reader",
			functionName: "ledger-reader",
			env: { ...settingsOf(readerDb), DB_MODE: "pool" },
		});
		environments.push(writer, reader);

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
