// Events that are not what the writer and the reader expect fail with InvalidEvent, which names the field, before
// any connection is opened: the database is a closed port here, so touching it would fail with ECONNREFUSED.
import { freePort, invokeInProcess } from "@middy-conn/test-harness";
import { beforeAll, describe, expect, it } from "vitest";

let functions: { writer: unknown; reader: unknown };

beforeAll(async () => {
	Object.assign(process.env, {
		DB_HOST: "127.0.0.1",
		DB_PORT: String(await freePort()),
		DB_USER: "ledger",
		DB_PASSWORD: "not-used",
		DB_NAME: "ledger",
		DB_MODE: "pool",
	});
	functions = await import("../handler.ts");
});

const failureOf = (handler: unknown, event: unknown) =>
	invokeInProcess(handler, event).then(
		() => undefined,
		(error: unknown) => error as Error,
	);

const accountId = /accountId must be 1 to 64 letters, digits, '-' or '_'/;
const amount = /amountCents must be a non-zero integer/;

describe("read-after-write: events they do not expect", () => {
	it.each<[string, unknown, RegExp]>([
		["no event", null, accountId],
		["a string", "acct-1", accountId],
		["an account id with a path in it", { accountId: "../acct-1", amountCents: 5 }, accountId],
		["an account id that is too long", { accountId: "a".repeat(65), amountCents: 5 }, accountId],
		["an account id given as a number", { accountId: 7, amountCents: 5 }, accountId],
		["no amount", { accountId: "acct-1" }, amount],
		["an amount of zero", { accountId: "acct-1", amountCents: 0 }, amount],
		["an amount given as a string", { accountId: "acct-1", amountCents: "5" }, amount],
		["an amount beyond 2^53", { accountId: "acct-1", amountCents: 2 ** 60 }, amount],
	])("writer, %s: InvalidEvent", async (_case, event, message) => {
		const failure = await failureOf(functions.writer, event);
		expect(failure).toMatchObject({ name: "InvalidEvent" });
		expect(failure?.message).toMatch(message);
	});

	it.each<[string, unknown]>([
		["no event", null],
		["an empty event", {}],
		["an account id with SQL in it", { accountId: "x' OR '1'='1" }],
		["an account id given as an array", { accountId: ["acct-1"] }],
	])("reader, %s: InvalidEvent", async (_case, event) => {
		const failure = await failureOf(functions.reader, event);
		expect(failure).toMatchObject({ name: "InvalidEvent" });
		expect(failure?.message).toMatch(accountId);
	});
});
