// The rules of an invocation's lifecycle (src/invocation.ts), on every path Middy can take.
//
// Real @middy/core; the resources are fakes that record every call (open, use, interrupt, close, destroy) in one
// event log, so that each rule is checked as an order of events. They stand for a database connection or the
// requests of an HTTP pool: these tests claim lifecycle behaviour, not database behaviour.
import { Readable } from "node:stream";
import { setTimeout as sleep, setImmediate as tick } from "node:timers/promises";
import middy, { type MiddlewareObj, type Request } from "@middy/core";
import { executionModeStreamifyResponse } from "@middy/core/executionModeStreamifyResponse";
import {
	createLambdaContext,
	installLambdaStreaming,
	invokeStreaming,
	type StreamingInvokeOptions,
} from "@middy-conn/test-harness";
import { recordingLogger } from "@middy-conn/test-harness/test-fixtures";
import type { Context } from "aws-lambda";
import { beforeAll, describe, expect, it, vi } from "vitest";
import {
	type EndKind,
	Invocation,
	type InvocationEnd,
	type InvocationOptions,
	isMiddyTimeout,
	type WaitUntil,
} from "../src/index.ts";

type Name = "a" | "b";

const codeOf = (error: unknown): string => String((error as { code?: unknown } | undefined)?.code);

/** What a handler, a background task or a response body holds: a stand-in for `context.db` or `context.http`. */
class FakeResource {
	busy = false;
	closed = false;
	readonly usedBy: string[] = [];
	readonly #inFlight = new Set<(reason: Error) => void>();

	readonly name: Name;
	readonly log: string[];

	constructor(name: Name, log: string[]) {
		this.name = name;
		this.log = log;
	}

	/** Work that needs the resource open. */
	use(by: string): void {
		if (this.closed) {
			this.log.push(`${this.name}:used-after-close-by:${by}`);
			throw new Error(`${this.name} was used after it was closed, by ${by}`);
		}
		this.usedBy.push(by);
		this.log.push(`${this.name}:used-by:${by}`);
	}

	/** A statement in flight: the resource is busy until it is interrupted, closed or destroyed (it then fails). */
	query(): Promise<never> {
		this.busy = true;
		const inFlight = new Promise<never>((_resolve, reject) => this.#inFlight.add(reject));
		inFlight.catch(() => {});
		return inFlight;
	}

	stop(reason: Error): void {
		this.busy = false;
		for (const reject of this.#inFlight) reject(reason);
		this.#inFlight.clear();
	}
}

type TestContext = Context & { waitUntil: WaitUntil } & Record<Name, FakeResource>;
type TestEvent = { id?: number; path?: string };

const testContext = (context: Context) => context as TestContext;

interface ClosedEnd {
	readonly name: Name;
	/** The `id` of the event of the invocation that registered the resource. */
	readonly owner: number | undefined;
	readonly end: InvocationEnd;
	/** Who had used the resource when its close began. */
	readonly usedBy: readonly string[];
}

/**
 * One test's world: the event log, the resources' middlewares, a spy logger, and everything the lifecycle handed
 * them (the invocations, the interrupt and destroy reasons, the ends passed to close).
 */
const lifecycleKit = (options: Partial<InvocationOptions> = {}) => {
	const log: string[] = [];
	const { logger } = recordingLogger();
	const invocations: Invocation[] = [];
	const waitUntils: WaitUntil[] = [];
	const ends: ClosedEnd[] = [];
	const reasons: Error[] = [];
	let open = 0;
	let maxOpen = 0;

	/** A middleware shaped like ours: registers its resource in `before`, ends it in `after` and `onError`. */
	const resource = (name: Name): MiddlewareObj => {
		const handles = new WeakMap<Request, { end(): Promise<void> | undefined }>();
		return {
			before: (request) => {
				const invocation = Invocation.of(request, {
					logger,
					waitUntilTimeout: 5_000,
					waitUntilReserve: 0,
					...options,
				});
				if (!invocations.includes(invocation)) {
					invocations.push(invocation);
					waitUntils.push(invocation.waitUntil);
				}
				// In use from `before` on (as a middleware that reports stats on every path is): Middy's control
				// flow is observed from here. (An untouched invocation is observed lazily: see the last describe.)
				invocation.inUse();
				const fake = new FakeResource(name, log);
				const owner = (request.event as TestEvent).id;
				const ended = () => {
					fake.closed = true;
					open--;
				};
				const handle = invocation.register({
					name,
					busy: () => fake.busy,
					interrupt: (reason) => {
						log.push(`${name}:interrupt:${codeOf(reason)}`);
						reasons.push(reason);
						fake.stop(reason);
					},
					close: async (end) => {
						log.push(`${name}:close:${end.kind}`);
						ends.push({ name, owner, end, usedBy: [...fake.usedBy] });
						await tick();
						fake.stop(new Error(`${name} closed`));
						ended();
						log.push(`${name}:closed`);
					},
					destroy: (reason) => {
						log.push(`${name}:destroy:${codeOf(reason)}`);
						reasons.push(reason);
						fake.stop(reason);
						ended();
					},
				});
				handles.set(request, handle);
				const context = testContext(request.context);
				context[name] = fake;
				context.waitUntil = invocation.waitUntil;
				open++;
				maxOpen = Math.max(maxOpen, open);
				log.push(`${name}:open`);
			},
			after: (request) => handles.get(request)?.end(),
			onError: (request) => handles.get(request)?.end(),
		};
	};

	/** A middleware whose `before` starts background work (or anything else) with the invocation's context. */
	const spawn = (work: (context: TestContext, event: TestEvent) => void): MiddlewareObj => ({
		before: (request) => work(testContext(request.context), request.event as TestEvent),
	});

	return {
		log,
		logger,
		invocations,
		waitUntils,
		ends,
		reasons,
		resource,
		spawn,
		/** The two resources' middlewares, a then b (their `before`s run in that order). */
		core: (...more: MiddlewareObj[]) => [resource("a"), resource("b"), ...more],
		get maxOpen() {
			return maxOpen;
		},
		/** Ends of one resource, as logged: `a:close:<kind>` or `a:destroy:<code>`. */
		endsOf: (name: Name) =>
			log.filter((entry) => entry.startsWith(`${name}:close:`) || entry.startsWith(`${name}:destroy:`)),
		/** Waits (bounded) until teardown has begun. */
		untilTeardown: async () => {
			for (let i = 0; i < 1_000 && invocations[0]?.phase === "open"; i++) await sleep(2);
		},
	};
};

type Kit = ReturnType<typeof lifecycleKit>;

type Outcome = { returns: unknown } | { throws: unknown };

/** Runs an invocation; logs "settled" the moment its promise settles. */
const invoke = (kit: Kit, run: () => Promise<unknown>): Promise<Outcome> =>
	run().then(
		(value: unknown) => {
			kit.log.push("settled");
			return { returns: value };
		},
		(error: unknown) => {
			kit.log.push("settled");
			return { throws: error };
		},
	);

const fail = (message: string) => (): never => {
	throw new Error(message);
};

const never = () => new Promise<never>(() => {});

const timeoutMessage = "[AbortError]: The operation was aborted.";

/** A background task that runs until its signal fires, and logs why it fired. */
const untilAborted = (kit: Kit) => (signal: AbortSignal) =>
	new Promise<void>((resolve) => {
		signal.addEventListener("abort", () => {
			kit.log.push(`task:aborted:${codeOf(signal.reason)}`);
			resolve();
		});
	});

type Handler = (event: TestEvent, context: Context) => Promise<unknown>;

interface Path {
	readonly name: string;
	/** The invocation, with the resources' middlewares (`core`: a, then b, then any extra) where this path has them. */
	readonly build: (core: MiddlewareObj[]) => Handler;
	/** Left on the Lambda clock when the invocation starts (the early-timeout paths are short). */
	readonly remainingMs?: number;
	/** What the invocation's promise does: resolve with a value, or reject with an error of this message. */
	readonly outcome: { returns: unknown } | { throws: string };
	/** How each resource ends. */
	readonly ends: Record<Name, EndKind | "destroy">;
	/** The background tasks are awaited on this path (they are aborted on a timeout or a throwing onError). */
	readonly awaitsTasks: boolean;
}

const handlerFails = async () => fail("handler failed")();

/**
 * Middy around the resources' middlewares (`core`): `earlier` registered before them, `later` after them, and a
 * handler that returns "ok" unless another is given.
 */
const around =
	({
		handler = async () => "ok",
		earlier,
		later,
		options,
	}: {
		handler?: () => Promise<unknown>;
		earlier?: MiddlewareObj;
		later?: MiddlewareObj;
		options?: { timeoutEarlyInMillis: number; timeoutEarlyResponse?: () => unknown };
	}) =>
	(core: MiddlewareObj[]): Handler =>
		middy(handler, options)
			.use(earlier ? [earlier] : [])
			.use(core)
			.use(later ? [later] : []);

const paths: readonly Path[] = [
	{
		name: "success",
		build: around({}),
		outcome: { returns: "ok" },
		ends: { a: "success", b: "success" },
		awaitsTasks: true,
	},
	{
		name: "the handler throws",
		build: around({ handler: handlerFails }),
		outcome: { throws: "handler failed" },
		ends: { a: "error", b: "error" },
		awaitsTasks: true,
	},
	{
		name: "a later before throws",
		build: around({ later: { before: fail("before failed") } }),
		outcome: { throws: "before failed" },
		ends: { a: "error", b: "error" },
		awaitsTasks: true,
	},
	{
		name: "an after throws before ours run (ours then end in onError)",
		build: around({ later: { after: fail("after failed") } }),
		outcome: { throws: "after failed" },
		ends: { a: "error", b: "error" },
		awaitsTasks: true,
	},
	{
		name: "an after throws after ours ran (onError runs for what is already closed)",
		build: around({ earlier: { after: fail("after failed") } }),
		outcome: { throws: "after failed" },
		ends: { a: "success", b: "success" },
		awaitsTasks: true,
	},
	{
		name: "a later before answers early",
		build: around({ handler: async () => "handler", later: { before: () => ({ statusCode: 304 }) } }),
		outcome: { returns: { statusCode: 304 } },
		ends: { a: "early-response", b: "early-response" },
		awaitsTasks: true,
	},
	{
		name: "an after answers early (ours are skipped)",
		build: around({ handler: async () => "handler", later: { after: () => "from an after" } }),
		outcome: { returns: "from an after" },
		ends: { a: "early-response", b: "early-response" },
		awaitsTasks: true,
	},
	{
		name: "an onError answers early (ours are skipped)",
		build: around({ handler: handlerFails, later: { onError: () => ({ statusCode: 500 }) } }),
		outcome: { returns: { statusCode: 500 } },
		ends: { a: "error", b: "error" },
		awaitsTasks: true,
	},
	{
		name: "an onError answers after ours ran",
		build: around({ handler: handlerFails, earlier: { onError: () => ({ statusCode: 500 }) } }),
		outcome: { returns: { statusCode: 500 } },
		ends: { a: "error", b: "error" },
		awaitsTasks: true,
	},
	{
		name: "an onError remaps request.error (and the chain goes on)",
		build: around({
			handler: handlerFails,
			later: {
				onError: (request) => {
					request.error = new Error("mapped", { cause: request.error });
				},
			},
		}),
		outcome: { throws: "mapped" },
		ends: { a: "error", b: "error" },
		awaitsTasks: true,
	},
	{
		name: "a custom timeoutEarlyResponse answers while the handler still runs",
		build: around({
			handler: never,
			options: { timeoutEarlyInMillis: 250, timeoutEarlyResponse: () => ({ statusCode: 503 }) },
		}),
		remainingMs: 300,
		outcome: { returns: { statusCode: 503 } },
		ends: { a: "success", b: "success" },
		awaitsTasks: true,
	},
	{
		name: "Middy's early timeout (TimeoutError)",
		build: around({ handler: never, options: { timeoutEarlyInMillis: 250 } }),
		remainingMs: 300,
		outcome: { throws: timeoutMessage },
		ends: { a: "timeout", b: "timeout" },
		awaitsTasks: false,
	},
	{
		name: "an onError throws",
		build: around({ handler: handlerFails, later: { onError: fail("onError failed") } }),
		outcome: { throws: "onError failed" },
		ends: { a: "destroy", b: "destroy" },
		awaitsTasks: false,
	},
];

const expectedOutcome = (outcome: Path["outcome"]): Outcome =>
	"throws" in outcome ? { throws: expect.objectContaining({ message: outcome.throws }) } : outcome;

const run = (kit: Kit, path: Path, core: MiddlewareObj[] = kit.core()) => {
	const handler = path.build(core);
	return invoke(kit, () => handler({}, createLambdaContext({ timeoutMs: path.remainingMs })));
};

describe("1. every registered resource is closed (or destroyed) exactly once, before the invocation's promise settles", () => {
	it.each(paths)("$name", async (path) => {
		const kit = lifecycleKit();
		expect(await run(kit, path)).toEqual(expectedOutcome(path.outcome));
		await sleep(20); // a late or second close would show up by now
		for (const name of ["a", "b"] as const) {
			const expected = path.ends[name];
			if (expected === "destroy") {
				expect(kit.endsOf(name)).toEqual([`${name}:destroy:MIDDY_CONN_TORN_DOWN`]);
				expect(kit.log.indexOf(`${name}:destroy:MIDDY_CONN_TORN_DOWN`)).toBeLessThan(
					kit.log.indexOf("settled"),
				);
			} else {
				expect(kit.endsOf(name)).toEqual([`${name}:close:${expected}`]);
				expect(kit.log.indexOf(`${name}:closed`)).toBeLessThan(kit.log.indexOf("settled"));
			}
		}
		expect(kit.invocations.map((invocation) => invocation.phase)).toEqual(["ended"]);
	});

	it("closes newest first when Middy skips the afters (onion order)", async () => {
		const kit = lifecycleKit();
		await run(kit, paths.find((path) => path.name === "a later before answers early") as Path);
		expect(kit.log).toEqual([
			"a:open",
			"b:open",
			"b:close:early-response",
			"b:closed",
			"a:close:early-response",
			"a:closed",
			"settled",
		]);
	});
});

describe.each<[string, (kit: Kit, spawn: MiddlewareObj) => MiddlewareObj[]]>([
	["after both resources registered", (kit, spawn) => [kit.resource("a"), kit.resource("b"), spawn]],
	["between the two registrations", (kit, spawn) => [kit.resource("a"), spawn, kit.resource("b")]],
])("2. background tasks started %s settle before any resource closes", (_where, layout) => {
	it.each(paths.filter((path) => path.awaitsTasks))("$name", async (path) => {
		const kit = lifecycleKit();
		const spawn = kit.spawn((context) => {
			context.waitUntil(sleep(5).then(() => kit.log.push("task:promise done")));
			context.waitUntil(async () => {
				await kit.untilTeardown();
				kit.log.push(`task:function sees ${kit.invocations[0]?.phase}`);
				// A task added while the tasks are draining, that adds another; the last uses both resources, for
				// the first time.
				context.waitUntil(
					sleep(10).then(() => {
						kit.log.push("task:late done");
						context.waitUntil(
							sleep(10).then(() => {
								context.a.use("later task");
								context.b.use("later task");
								kit.log.push("task:later done");
							}),
						);
					}),
				);
			});
		});
		expect(await run(kit, path, layout(kit, spawn))).toEqual(expectedOutcome(path.outcome));
		const firstClose = kit.log.findIndex((entry) => entry.includes(":close:"));
		expect(firstClose).toBeGreaterThan(-1);
		const tasksDone = [
			"task:promise done",
			"task:function sees ending",
			"task:late done",
			"a:used-by:later task",
			"b:used-by:later task",
			"task:later done",
		];
		expect(kit.log.slice(0, firstClose)).toEqual(expect.arrayContaining(tasksDone));
		expect(kit.invocations[0]?.backgroundTasks).toEqual({ finished: 4, failed: 0, aborted: 0 });
		expect(kit.logger.error).not.toHaveBeenCalled();
	});
});

describe("3. once the invocation has ended, context.waitUntil refuses new tasks", () => {
	it.each(paths)("$name", async (path) => {
		const kit = lifecycleKit();
		await run(kit, path);
		const task = vi.fn(async () => {});
		const refuse = () => (kit.waitUntils[0] as WaitUntil)(task);
		expect(refuse).toThrow(expect.objectContaining({ code: "MIDDY_CONN_INVOCATION_ENDED" }));
		expect(task).not.toHaveBeenCalled();
		expect(kit.logger.error).toHaveBeenCalledWith(
			expect.stringContaining("after the invocation ended"),
			expect.objectContaining({ code: "MIDDY_CONN_INVOCATION_ENDED" }),
		);
	});
});

describe("4. the end is `unfinished` when the handler's work was still in flight at teardown: never commit it", () => {
	it.each<{
		name: string;
		handler: (context: TestContext) => Promise<unknown>;
		plugin?: object;
		unfinished: boolean;
	}>([
		{ name: "an ordinary success", handler: async () => "ok", unfinished: false },
		{
			name: "success with the handler's statement still in flight (not awaited)",
			handler: async (context) => {
				void context.a.query();
				return "ok";
			},
			unfinished: true,
		},
		{
			name: "a custom timeoutEarlyResponse answers while the handler's statement runs",
			handler: async (context) => context.a.query(),
			plugin: { timeoutEarlyInMillis: 250, timeoutEarlyResponse: () => ({ statusCode: 503 }) },
			unfinished: true,
		},
		{
			name: "Middy's TimeoutError, even with nothing in flight",
			handler: never,
			plugin: { timeoutEarlyInMillis: 250 },
			unfinished: true,
		},
		{
			name: "busy at teardown only for a background task, which then finished",
			handler: async (context) => {
				context.waitUntil(async () => {
					context.a.busy = true;
					await sleep(20);
					context.a.busy = false;
				});
				return "ok";
			},
			unfinished: false,
		},
		{
			name: "busy at teardown while a background task ran, and still busy after it",
			handler: async (context) => {
				void context.a.query();
				context.waitUntil(sleep(20));
				return "ok";
			},
			unfinished: true,
		},
	])("$name: unfinished is $unfinished", async ({ handler, plugin, unfinished }) => {
		const kit = lifecycleKit();
		const invocation = middy(
			(_event: unknown, context: Context) => handler(testContext(context)),
			plugin,
		).use(kit.core());
		await invoke(kit, () => invocation({}, createLambdaContext({ timeoutMs: 300 })));
		expect(kit.ends.map(({ name, end }) => [name, end.unfinished])).toEqual([
			["b", unfinished],
			["a", unfinished],
		]);
	});
});

describe("5. Middy's TimeoutError is acted on when Middy raises it, before any onError", () => {
	it("interrupts every resource and aborts the background tasks before the first onError, then closes each with kind timeout", async () => {
		const kit = lifecycleKit();
		const handler = middy(
			async (_event: unknown, lambda: Context) => {
				const context = testContext(lambda);
				context.waitUntil(untilAborted(kit));
				context.waitUntil(new Promise(() => {}));
				await context.a.query();
			},
			{ timeoutEarlyInMillis: 250 },
		)
			.use({ onError: () => void kit.log.push("onError registered first (runs last)") })
			.use(kit.core())
			.use({ onError: () => void kit.log.push("onError registered last (runs first)") });
		const outcome = await invoke(kit, () => handler({}, createLambdaContext({ timeoutMs: 300 })));

		const timeout = (outcome as { throws: unknown }).throws;
		expect(isMiddyTimeout(timeout)).toBe(true);
		// The interrupts and the tasks' abort all say why: Middy's TimeoutError.
		const [reason] = kit.reasons;
		expect(kit.reasons).toEqual([reason, reason]);
		expect(reason?.cause).toBe(timeout);
		const code = codeOf(reason);
		const firstOnError = kit.log.indexOf("onError registered last (runs first)");
		expect(new Set(kit.log.slice(0, firstOnError))).toEqual(
			new Set(["a:open", "b:open", `task:aborted:${code}`, `a:interrupt:${code}`, `b:interrupt:${code}`]),
		);
		expect(kit.log.slice(firstOnError)).toEqual([
			"onError registered last (runs first)",
			"b:close:timeout",
			"b:closed",
			"a:close:timeout",
			"a:closed",
			"onError registered first (runs last)",
			"settled",
		]);
		expect(kit.ends.map(({ end }) => end)).toEqual([
			{ kind: "timeout", error: timeout, unfinished: true },
			{ kind: "timeout", error: timeout, unfinished: true },
		]);
		expect(kit.invocations[0]?.backgroundTasks).toEqual({ finished: 0, failed: 0, aborted: 2 });
	});

	it("lets an onError that runs before ours wait for the handler's statement: it was interrupted already", async () => {
		const kit = lifecycleKit();
		let statement: Promise<unknown> = Promise.resolve();
		const handler = middy(
			async (_event: unknown, lambda: Context) => {
				statement = testContext(lambda).a.query();
				await statement;
			},
			{ timeoutEarlyInMillis: 250 },
		)
			.use(kit.core())
			.use({
				onError: async () => {
					await Promise.race([
						statement.catch((error: unknown) =>
							kit.log.push(`statement failed: ${isMiddyTimeout((error as Error).cause) ? "timeout" : error}`),
						),
						sleep(2_000).then(() => kit.log.push("gave up waiting for the statement")),
					]);
				},
			});
		await invoke(kit, () => handler({}, createLambdaContext({ timeoutMs: 300 })));
		expect(kit.log).toContain("statement failed: timeout");
		expect(kit.log).not.toContain("gave up waiting for the statement");
	});
});

describe("6. an onError that throws leaves no time: everything open is destroyed at once", () => {
	it.each<[string, (request: Request) => unknown]>([
		["throws a new error", () => new Error("onError failed")],
		["rethrows request.error", (request) => request.error],
	])(
		"an onError that %s: destroy on every open resource, synchronously; tasks aborted; the error propagates unchanged",
		async (_case, toThrow) => {
			const kit = lifecycleKit();
			let thrown: unknown;
			const handler = middy(async (_event: unknown, lambda: Context) => {
				testContext(lambda).waitUntil(untilAborted(kit));
				throw new Error("handler failed");
			})
				.use(kit.core())
				.use({
					onError: (request) => {
						thrown = toThrow(request);
						// Runs after whatever happens synchronously with the throw.
						queueMicrotask(() => kit.log.push("next microtask"));
						throw thrown;
					},
				});
			const outcome = await invoke(kit, () => handler({}, createLambdaContext()));
			expect(outcome).toEqual({ throws: thrown });
			expect((outcome as { throws: unknown }).throws).toBe(thrown);
			const microtask = kit.log.indexOf("next microtask");
			expect(new Set(kit.log.slice(2, microtask))).toEqual(
				new Set([
					"task:aborted:MIDDY_CONN_TORN_DOWN",
					"a:destroy:MIDDY_CONN_TORN_DOWN",
					"b:destroy:MIDDY_CONN_TORN_DOWN",
				]),
			);
			expect(kit.log.filter((entry) => entry.includes(":close"))).toEqual([]);
			expect(kit.reasons.map((reason) => reason.cause)).toEqual([thrown, thrown]);
			expect(kit.invocations[0]?.phase).toBe("ended");
		},
	);

	it("destroys nothing when the onError that throws runs after ours closed", async () => {
		const kit = lifecycleKit();
		const handler = middy(async () => fail("handler failed")())
			.use({ onError: fail("onError failed") })
			.use(kit.core());
		expect(await invoke(kit, () => handler({}, createLambdaContext()))).toEqual(
			expectedOutcome({ throws: "onError failed" }),
		);
		expect(kit.log).toEqual([
			"a:open",
			"b:open",
			"b:close:error",
			"b:closed",
			"a:close:error",
			"a:closed",
			"settled",
		]);
	});

	it("does not destroy on an onError that remaps request.error: ours close gracefully later, with the mapped error", async () => {
		const kit = lifecycleKit();
		const handler = middy(async () => fail("handler failed")())
			.use(kit.core())
			.use({
				onError: (request) => {
					kit.log.push("remap");
					request.error = new Error("mapped", { cause: request.error });
				},
			});
		const outcome = await invoke(kit, () => handler({}, createLambdaContext()));
		expect(kit.log).toEqual([
			"a:open",
			"b:open",
			"remap",
			"b:close:error",
			"b:closed",
			"a:close:error",
			"a:closed",
			"settled",
		]);
		const mapped = (outcome as { throws: Error }).throws;
		expect(mapped.message).toBe("mapped");
		expect(kit.ends.map(({ end }) => end)).toEqual([
			{ kind: "error", error: mapped, unfinished: false },
			{ kind: "error", error: mapped, unfinished: false },
		]);
	});
});

describe("7. the background tasks' deadline", () => {
	const hung = (kit: Kit) =>
		kit.spawn((context) => {
			context.waitUntil(new Promise(() => {}));
			context.waitUntil(untilAborted(kit));
		});

	it.each(
		paths.filter((path) =>
			["success", "the handler throws", "a later before answers early"].includes(path.name),
		),
	)(
		"$name: a task still running at waitUntilTimeout is aborted, the resources interrupted, and the invocation still ends",
		async (path) => {
			const kit = lifecycleKit({ waitUntilTimeout: 50 });
			expect(await run(kit, path, kit.core(hung(kit)))).toEqual(expectedOutcome(path.outcome));
			const firstClose = kit.log.findIndex((entry) => entry.includes(":close:"));
			expect(new Set(kit.log.slice(2, firstClose))).toEqual(
				new Set([
					"task:aborted:MIDDY_CONN_WAIT_UNTIL_DEADLINE",
					"a:interrupt:MIDDY_CONN_WAIT_UNTIL_DEADLINE",
					"b:interrupt:MIDDY_CONN_WAIT_UNTIL_DEADLINE",
				]),
			);
			expect(kit.endsOf("a")).toHaveLength(1);
			expect(kit.endsOf("b")).toHaveLength(1);
			expect(kit.invocations[0]?.backgroundTasks).toEqual({ finished: 0, failed: 0, aborted: 2 });
			expect(kit.logger.warn).toHaveBeenCalledWith(
				expect.stringContaining("aborted at the wait deadline"),
				expect.objectContaining({ code: "MIDDY_CONN_WAIT_UNTIL_DEADLINE" }),
			);
		},
	);

	it("comes at Lambda's remaining time minus waitUntilReserve when that is sooner than waitUntilTimeout", async () => {
		// waitUntilTimeout alone would outlast the test's own timeout.
		const kit = lifecycleKit({ waitUntilTimeout: 600_000, waitUntilReserve: 9_950 });
		const handler = middy(async () => "ok").use(kit.core(hung(kit)));
		expect(await invoke(kit, () => handler({}, createLambdaContext({ timeoutMs: 10_000 })))).toEqual({
			returns: "ok",
		});
		expect(kit.log).toContain("a:interrupt:MIDDY_CONN_WAIT_UNTIL_DEADLINE");
		expect(kit.invocations[0]?.backgroundTasks.aborted).toBe(2);
	});
});

describe("8. streaming (executionModeStreamifyResponse): resources stay open until the body's last byte", () => {
	// The Lambda runtime's `awslambda` global, before Middy reads it (when the handler is created).
	beforeAll(() => {
		installLambdaStreaming();
	});

	/** A streaming handler. Its invocation, run as the runtime runs it, logs into the kit's event log. */
	const streaming = (
		kit: Kit,
		handler: (event: unknown, context: Context) => Promise<unknown>,
		middlewares: MiddlewareObj[],
	) => {
		const streamingHandler = middy(handler, { executionMode: executionModeStreamifyResponse }).use(
			middlewares,
		);
		return (options: StreamingInvokeOptions = {}) =>
			invokeStreaming(streamingHandler, {}, createLambdaContext(), { ...options, timeline: kit.log });
	};

	/** A body that reads from resource a for each of its rows (like rows streamed from a query). */
	const rows = (kit: Kit, context: TestContext, fault?: "fails" | "is destroyed") => {
		const body = new Readable({ read() {} });
		void (async () => {
			for (let i = 0; i < 3; i++) {
				await tick();
				if (body.destroyed) return;
				if (i === 1 && fault === "fails") return void body.destroy(new Error("source failed"));
				if (i === 1 && fault === "is destroyed") return void body.destroy();
				context.a.use(`body row ${i}`);
				body.push(`row${i}\n`);
			}
			kit.log.push("body-end");
			body.push(null);
		})();
		return body;
	};

	const bodyRead = ["a:used-by:body row 0", "a:used-by:body row 1", "a:used-by:body row 2", "body-end"];

	it.each<[string, (body: Readable) => unknown]>([
		["a Readable as the response", (body) => body],
		["a web ReadableStream as the response", (body) => Readable.toWeb(body)],
		["an HTTP response with a Readable body", (body) => ({ statusCode: 200, body })],
		[
			"an HTTP response with a web ReadableStream body",
			(body) => ({ statusCode: 200, body: Readable.toWeb(body) }),
		],
	])("%s: close after the body ends, and the invocation settles after close", async (_case, respond) => {
		const kit = lifecycleKit();
		const invocation = await streaming(
			kit,
			async (_event, context) => respond(rows(kit, testContext(context))),
			kit.core(),
		)();
		expect(kit.log).toEqual([
			"a:open",
			"b:open",
			...bodyRead,
			"b:close:success",
			"b:closed",
			"a:close:success",
			"a:closed",
			"response:finished",
			"handler:resolved",
		]);
		expect(invocation.body.toString()).toBe("row0\nrow1\nrow2\n");
		expect(() => (kit.waitUntils[0] as WaitUntil)(async () => {})).toThrow(
			expect.objectContaining({ code: "MIDDY_CONN_INVOCATION_ENDED" }),
		);
	});

	it("keeps the resources of an early response that streams its body until that body ends", async () => {
		const kit = lifecycleKit();
		const invocation = await streaming(
			kit,
			async () => "handler",
			kit.core({
				before: (request) => ({ statusCode: 200, body: rows(kit, testContext(request.context)) }),
			}),
		)();
		expect(kit.log).toEqual([
			"a:open",
			"b:open",
			...bodyRead,
			"b:close:early-response",
			"b:closed",
			"a:close:early-response",
			"a:closed",
			"response:finished",
			"handler:resolved",
		]);
		expect(invocation.prelude).toEqual({ statusCode: 200 });
	});

	it("awaits the background tasks after the body, before any resource closes", async () => {
		const kit = lifecycleKit();
		await streaming(
			kit,
			async (_event, lambda) => {
				const context = testContext(lambda);
				context.waitUntil(sleep(30).then(() => context.b.use("task")));
				return rows(kit, context);
			},
			kit.core(),
		)();
		expect(kit.log.slice(kit.log.indexOf("body-end"))).toEqual([
			"body-end",
			"b:used-by:task",
			"b:close:success",
			"b:closed",
			"a:close:success",
			"a:closed",
			"response:finished",
			"handler:resolved",
		]);
	});

	it.each<[string, "fails" | "is destroyed" | undefined, StreamingInvokeOptions, string]>([
		["the body's source fails", "fails", {}, "source failed"],
		["the body's source is destroyed", "is destroyed", {}, "Premature close"],
		[
			"the response stream fails (the request to the runtime API broke)",
			undefined,
			{ failAfterBytes: 7, failWith: new Error("write EPIPE") },
			"write EPIPE",
		],
	])(
		"closes with kind error when %s, before the invocation settles",
		async (_case, fault, options, message) => {
			const kit = lifecycleKit();
			const invocation = await streaming(
				kit,
				async (_event, context) => rows(kit, testContext(context), fault),
				kit.core(),
			)(options);
			expect(invocation.settled).toEqual({
				status: "rejected",
				reason: expect.objectContaining({ message }),
			});
			expect(kit.log.filter((entry) => /:close|handler:/.test(entry))).toEqual([
				"b:close:error",
				"b:closed",
				"a:close:error",
				"a:closed",
				"handler:rejected",
			]);
			expect(kit.ends.map(({ end }) => end)).toEqual([
				{ kind: "error", error: expect.objectContaining({ message }), unfinished: false },
				{ kind: "error", error: expect.objectContaining({ message }), unfinished: false },
			]);
			expect(kit.invocations[0]?.phase).toBe("ended");
		},
	);

	describe.each<[string, () => Readable]>([
		["whose body was still streaming", () => new Readable({ read() {} })],
		["whose short body had already ended (nothing writes it any more)", () => Readable.from(["original"])],
	])("an outer after replaces a streamed response %s", (_original, original) => {
		it.each<[string, () => unknown]>([
			["with another stream", () => Readable.from(["replaced"])],
			["with a string", () => "replaced"],
			["with an HTTP response with a string body", () => ({ statusCode: 201, body: "replaced" })],
		])("%s: every resource closes before the invocation settles", async (_case, replacement) => {
			const kit = lifecycleKit();
			const invocation = await streaming(kit, async () => original(), [
				{
					after: (request) => {
						request.response = replacement();
					},
				},
				...kit.core(),
			])();
			expect(kit.log).toEqual([
				"a:open",
				"b:open",
				"b:close:success",
				"b:closed",
				"a:close:success",
				"a:closed",
				"response:finished",
				"handler:resolved",
			]);
			expect(invocation.body.toString()).toBe("replaced");
		});
	});

	it.each<[string, unknown]>([
		["a string", "plain"],
		["an HTTP response with a string body", { statusCode: 200, body: "plain" }],
	])("closes %s as in standard mode, in the afters, before it is written", async (_case, response) => {
		const kit = lifecycleKit();
		const invocation = await streaming(kit, async () => response, kit.core())();
		expect(kit.log).toEqual([
			"a:open",
			"b:open",
			"b:close:success",
			"b:closed",
			"a:close:success",
			"a:closed",
			"response:finished",
			"handler:resolved",
		]);
		expect(invocation.body.toString()).toBe("plain");
	});
});

describe("9. concurrent invocations in one process (Lambda Managed Instances)", () => {
	it("gives each of 50 interleaved invocations its own invocation, resources and tasks, with no cross-talk", async () => {
		const kit = lifecycleKit();
		const pathOf = ["success", "throws", "early"] as const;
		const handler = middy(async (event: TestEvent, lambda: Context) => {
			testContext(lambda).a.use(`handler ${event.id}`);
			await sleep((event.id ?? 0) % 5);
			if (event.path === "throws") throw new Error(`handler ${event.id} failed`);
			return { id: event.id };
		})
			.use({ onError: (request) => ({ statusCode: 500, id: (request.event as TestEvent).id }) })
			.use(
				kit.core(
					kit.spawn((context, event) => {
						context.waitUntil(
							sleep(((event.id ?? 0) * 7) % 11).then(() => context.b.use(`task ${event.id}`)),
						);
					}),
					{
						before: (request) =>
							(request.event as TestEvent).path === "early" ? { early: true } : undefined,
					},
				),
			);

		const events = Array.from({ length: 50 }, (_, id) => ({
			id,
			path: pathOf[id % 3] as (typeof pathOf)[number],
		}));
		const results = await Promise.all(events.map((event) => handler(event, createLambdaContext())));

		expect(kit.maxOpen).toBeGreaterThan(2); // they really overlapped
		expect(new Set(kit.invocations).size).toBe(50);
		expect(kit.invocations.every((invocation) => invocation.phase === "ended")).toBe(true);
		expect(kit.ends).toHaveLength(100);
		for (const { id, path } of events) {
			const expectedResult = { success: { id }, throws: { statusCode: 500, id }, early: { early: true } }[
				path
			];
			const kind = { success: "success", throws: "error", early: "early-response" }[path];
			expect(results[id]).toEqual(expectedResult);
			const own = kit.ends.filter((closed) => closed.owner === id);
			expect(own.map(({ name, end }) => [name, end.kind])).toEqual([
				["b", kind],
				["a", kind],
			]);
			expect(own.find(({ name }) => name === "b")?.usedBy).toEqual([`task ${id}`]);
			expect(own.find(({ name }) => name === "a")?.usedBy).toEqual(path === "early" ? [] : [`handler ${id}`]);
		}
		expect(kit.logger.error).not.toHaveBeenCalled();
	});
});

describe("an invocation that uses nothing is not observed (it has nothing to leave open)", () => {
	const register = (request: Request, log: string[]) => {
		const invocation = Invocation.of(request, {
			logger: { info() {}, warn() {}, error() {} },
			waitUntilTimeout: 1_000,
			waitUntilReserve: 0,
		});
		(request.context as unknown as { waitUntil: WaitUntil }).waitUntil = invocation.waitUntil;
		return invocation.register({
			name: "lazy",
			busy: () => false,
			interrupt: () => log.push("interrupt"),
			close: () => {
				log.push("close");
			},
			destroy: () => log.push("destroy"),
		});
	};

	it("leaves request.response and request.error plain data properties while nothing is used", async () => {
		const seen: PropertyDescriptor[] = [];
		const log: string[] = [];
		const handler = middy(async () => "ok").use({
			before: (request) => {
				(request.internal as { handle?: unknown }).handle = register(request, log);
			},
			after: (request) => {
				seen.push(Object.getOwnPropertyDescriptor(request, "response") as PropertyDescriptor);
				return (request.internal as { handle: { end(): Promise<void> | undefined } }).handle.end();
			},
		});
		expect(await handler({}, createLambdaContext())).toBe("ok");
		expect(seen[0]).toHaveProperty("value", "ok");
		expect(log).toEqual(["close"]);
	});

	it("observes from the first use on: a task handed over in a before is awaited before an early response returns", async () => {
		const log: string[] = [];
		const handler = middy(async () => "handler")
			.use({
				before: (request) => {
					register(request, log);
				},
			})
			.use({
				before: (request) => {
					(request.context as unknown as { waitUntil: WaitUntil }).waitUntil(
						tick().then(() => {
							log.push("task done");
						}),
					);
					return "early";
				},
			});
		expect(await handler({}, createLambdaContext())).toBe("early");
		expect(log).toEqual(["task done", "close"]);
	});

	it("sees Middy's error when the invocation was not observed: onError ends it as a failure", async () => {
		const ends: string[] = [];
		const handler = middy(async () => {
			throw new Error("handler failed");
		}).use({
			before: (request) => {
				const invocation = Invocation.of(request, {
					logger: { info() {}, warn() {}, error() {} },
					waitUntilTimeout: 1_000,
					waitUntilReserve: 0,
				});
				(request.internal as { handle?: unknown }).handle = invocation.register({
					name: "lazy",
					busy: () => false,
					interrupt: () => {},
					close: (end) => {
						ends.push(end.kind);
					},
					destroy: () => {},
				});
			},
			onError: (request) =>
				(request.internal as { handle: { end(): Promise<void> | undefined } }).handle.end(),
		});
		await expect(handler({}, createLambdaContext())).rejects.toThrow("handler failed");
		expect(ends).toEqual(["error"]);
	});
});
