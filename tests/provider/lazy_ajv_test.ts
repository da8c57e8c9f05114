// The executable's ajv for @platformatic/kafka (scripts/_lazy_ajv.ts): a validator compiles its
// schema on its first call, then answers as the eagerly compiled one, errors included.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Ajv2020 as EagerAjv2020 } from "ajv/dist/2020.js";
import { Ajv2020 as LazyAjv2020 } from "../../scripts/_lazy_ajv.ts";

// Like the library's option schemas: a custom keyword added after the instance is made, and
// before the first validation.
const schema = {
  type: "object",
  properties: {
    clientId: { type: "string", minLength: 1 },
    retries: { type: "number", minimum: 0 },
    brokers: { type: "array", items: { type: "string" }, minItems: 1 },
    onEvent: { function: true },
  },
  required: ["clientId"],
  additionalProperties: false,
};
function withKeyword<A extends EagerAjv2020>(ajv: A): A {
  ajv.addKeyword({
    keyword: "function",
    validate: (_: unknown, x: unknown) => typeof x === "function",
    error: { message: "must be a function" },
  });
  return ajv;
}
const options = { allErrors: true, coerceTypes: false, strict: true };

describe("the executable's lazy ajv", () => {
  it("compiles a schema on the first validation, once", () => {
    const lazy = withKeyword(new LazyAjv2020(options));
    const validate = lazy.compile(schema as never) as (d: unknown) => boolean;
    assert.equal(lazy.compiled, 0);
    assert.equal(validate({ clientId: "a" }), true);
    assert.equal(validate({ clientId: "b" }), true);
    assert.equal(lazy.compiled, 1);
  });

  it("answers as ajv does, with the same errors after each call", () => {
    const eager = withKeyword(new EagerAjv2020(options));
    const lazy = withKeyword(new LazyAjv2020(options));
    const e = eager.compile(schema);
    const l = lazy.compile(schema as never) as ((d: unknown) => boolean) & { errors: unknown };
    const inputs: unknown[] = [
      { clientId: "a", retries: 3, brokers: ["x:1"], onEvent: () => {} },
      { clientId: "" },
      { retries: -1, brokers: [], extra: 1 },
      { clientId: "a", onEvent: 5 },
      "not an object",
      { clientId: "a" },
    ];
    for (const input of inputs) {
      const want = e(input);
      assert.equal(l(input), want, JSON.stringify(input));
      assert.deepEqual(l.errors, e.errors, JSON.stringify(input));
      if (!want) {
        // What the library words a refusal with.
        assert.equal(lazy.errorsText(l.errors as never), eager.errorsText(e.errors));
      }
    }
  });
});
