// SQL injection, from both ends: the examples (what users copy) pass every value through placeholders, never
// into the SQL text; and the middleware leaves mysql2's `multipleStatements` off unless it is turned on, so that
// even a statement built from input cannot carry a second one.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import middy from "@middy/core";
import { closeMysqlPools, mysqlConnection } from "@middy-conn/mysql";
import { invokeInProcess } from "@middy-conn/test-harness";
import { usePoolCleanup, useTestDatabase } from "@middy-conn/test-harness/test-fixtures";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const examples = fileURLToPath(new URL("../../examples/", import.meta.url));
const handlers = readdirSync(examples, { withFileTypes: true })
	.filter((entry) => entry.isDirectory())
	.map((entry) => `${examples}${entry.name}/handler.ts`)
	.filter((file) => existsSync(file));

const SQL = /^\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|CALL|SET|START|BEGIN|COMMIT|ROLLBACK|LOCK|WITH)\b/i;

interface Statement {
	file: string;
	line: number;
	/** The SQL text as written, or the expression that builds it. */
	text: string;
	/** Built from pieces: a template with `${...}`, a `+`, a call. */
	built: boolean;
	/** The call passes values for the placeholders. */
	values: boolean;
}

/** Every `.query(...)`/`.execute(...)` call in a file, and every string literal that reads as SQL. */
const statementsOf = (file: string): { calls: Statement[]; literals: Statement[] } => {
	const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
	const calls: Statement[] = [];
	const literals: Statement[] = [];
	const lineOf = (node: ts.Node) => source.getLineAndCharacterOfPosition(node.getStart()).line + 1;
	const visit = (node: ts.Node) => {
		if (
			ts.isCallExpression(node) &&
			ts.isPropertyAccessExpression(node.expression) &&
			["query", "execute"].includes(node.expression.name.text) &&
			node.arguments.length > 0
		) {
			const sql = node.arguments[0] as ts.Expression;
			calls.push({
				file,
				line: lineOf(node),
				text: sql.getText(source),
				built: !(ts.isStringLiteral(sql) || ts.isNoSubstitutionTemplateLiteral(sql)),
				values: node.arguments.length > 1,
			});
		}
		if ((ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) && SQL.test(node.text)) {
			literals.push({ file, line: lineOf(node), text: node.text, built: false, values: false });
		}
		if (ts.isTemplateExpression(node) && SQL.test(node.head.text)) {
			literals.push({ file, line: lineOf(node), text: node.getText(source), built: true, values: false });
		}
		if (
			ts.isBinaryExpression(node) &&
			node.operatorToken.kind === ts.SyntaxKind.PlusToken &&
			[node.left, node.right].some((side) => ts.isStringLiteral(side) && SQL.test(side.text))
		) {
			literals.push({ file, line: lineOf(node), text: node.getText(source), built: true, values: false });
		}
		ts.forEachChild(node, visit);
	};
	visit(source);
	return { calls, literals };
};

const all = handlers.map(statementsOf);
const calls = all.flatMap((found) => found.calls);
const literals = all.flatMap((found) => found.literals);
const where = (statement: Statement) =>
	`${statement.file.slice(examples.length)}:${statement.line} ${statement.text}`;

describe("the examples' SQL", () => {
	it("is found: every example's handler was read, and its statements seen", () => {
		expect(handlers.length).toBeGreaterThanOrEqual(3);
		expect(calls.length).toBeGreaterThanOrEqual(5);
	});

	it("is one literal per call: never a template with placeholders, a concatenation or a variable", () => {
		expect(calls.filter((call) => call.built).map(where)).toEqual([]);
		expect(literals.filter((literal) => literal.built).map(where)).toEqual([]);
	});

	it("takes every value through placeholders: a statement with a ? is given its values", () => {
		const missing = calls.filter((call) => /\?/.test(call.text) && !call.values);
		expect(missing.map(where)).toEqual([]);
		// and a statement given values has placeholders for them
		expect(calls.filter((call) => call.values && !/\?/.test(call.text)).map(where)).toEqual([]);
	});

	it("never turns multipleStatements on", () => {
		for (const file of handlers) expect(readFileSync(file, "utf8")).not.toMatch(/multipleStatements/);
	});
});

describe("multipleStatements", () => {
	const { db } = useTestDatabase("stacked");
	usePoolCleanup(closeMysqlPools);

	const stacked = (extra: Record<string, unknown>, mode: "scoped" | "pool") =>
		middy()
			.use(
				mysqlConnection({
					mode,
					config: {
						host: db.host,
						port: db.port,
						user: db.user,
						password: db.password,
						database: db.database,
						...extra,
					},
					logger: false,
				}),
			)
			.handler(async (_event, context) => context.db.query("SELECT 1 AS one; SELECT 2 AS two"));

	it.each(["scoped", "pool"] as const)(
		"is off by default (%s): a second statement is a syntax error",
		async (mode) => {
			await expect(invokeInProcess(stacked({}, mode), {})).rejects.toMatchObject({ code: "ER_PARSE_ERROR" });
		},
	);

	it("is on only when the config says so", async () => {
		const result = await invokeInProcess<unknown[]>(stacked({ multipleStatements: true }, "scoped"), {});
		expect(result[0]).toHaveLength(2);
	});
});
