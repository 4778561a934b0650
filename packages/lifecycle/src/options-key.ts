// The cache key of a middleware's module-level resource (a warm HTTP or MySQL pool).
//
// Pools live in module scope so that warm invocations find them again; two middlewares with equal options (say,
// two handler modules bundled into one function) must find the same pool instead of doubling the connections.
// "Equal" means equal by value for data (sorted keys, so key order does not matter; Buffers by content, so a CA
// read again is the same CA) and equal by identity for behaviour (functions, interceptors, class instances).

const identities = new WeakMap<object, number>();
let nextIdentity = 1;

const identityOf = (value: object): number => {
	let id = identities.get(value);
	if (id === undefined) {
		id = nextIdentity++;
		identities.set(value, id);
	}
	return id;
};

const isPlainObject = (value: object): boolean => {
	const proto = Object.getPrototypeOf(value);
	return proto === Object.prototype || proto === null;
};

/** A stable serialization of options; undefined fields are left out, as they mean "the default". */
export const optionsKey = (value: unknown): string => {
	if (value === undefined) return "undefined";
	if (typeof value === "function") return `fn#${identityOf(value)}`;
	if (value === null || typeof value !== "object") return JSON.stringify(value);
	if (Buffer.isBuffer(value)) return `buf:${value.toString("base64")}`;
	if (Array.isArray(value)) return `[${value.map(optionsKey).join(",")}]`;
	if (!isPlainObject(value)) return `obj#${identityOf(value)}`;
	const record = value as Record<string, unknown>;
	return `{${Object.keys(record)
		.filter((key) => record[key] !== undefined)
		.sort()
		.map((key) => `${JSON.stringify(key)}:${optionsKey(record[key])}`)
		.join(",")}}`;
};
