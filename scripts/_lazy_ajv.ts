/**
 * `Ajv2020` whose `compile` defers the work to the first validation, for the executable's
 * copy of @platformatic/kafka (see `scripts/compile.ts`, which points the library's import
 * of `ajv/dist/2020.js` here, and only that import).
 *
 * The library compiles the JSON schemas of every option of every client and call when it is
 * loaded: about 80 of them, of which a producer uses a handful. That was about 200 ms of CPU
 * at each start of the agent, three quarters of loading the library, and most of the CPU the
 * agent spends before it delivers anything. A validator from here compiles its schema when
 * it is first called, then behaves as the compiled one: the same result, and the same
 * `errors` after each call (what the library reads to word a refusal).
 *
 * @module
 */

import { Ajv2020 as EagerAjv2020 } from "ajv/dist/2020.js";

type Validate = ((data: unknown, ...rest: unknown[]) => boolean) & { errors?: unknown };

/** `Ajv2020` with `compile` deferred to the first call of the validator it returns. */
export class Ajv2020 extends EagerAjv2020 {
  /** How many schemas were compiled (for tests). */
  compiled = 0;

  // (Typed loosely: the library calls it with a schema and reads a validator back.)
  override compile(schema: never, meta?: boolean): never {
    let validate: Validate | null = null;
    const lazy: Validate = (data: unknown, ...rest: unknown[]): boolean => {
      if (validate === null) {
        validate = super.compile(schema, meta) as unknown as Validate;
        this.compiled++;
      }
      const ok = validate(data, ...rest);
      lazy.errors = validate.errors;
      return ok;
    };
    lazy.errors = null;
    return lazy as never;
  }
}

export default Ajv2020;
