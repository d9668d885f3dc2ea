/**
 * Validation of untrusted params (from a renderer) against METHOD_SPECS, before anything reaches
 * the sidecar. Returns a fresh JSON copy (no prototypes, no getters, no non-JSON values).
 */
import { METHOD_SPECS, type FieldSpec, type JsonValue, type MethodName, type ParamsSpec } from './protocol';

export type ValidationResult = { ok: true; params: JsonValue | undefined } | { ok: false; field: string; reason: string };

const MAX_DEPTH = 64;

export function validateParams(method: MethodName, input: unknown): ValidationResult {
  const spec = METHOD_SPECS[method].params as ParamsSpec | null;
  if (spec === null) {
    if (input === undefined || input === null || (isPlainObject(input) && Object.keys(input).length === 0)) {
      return { ok: true, params: undefined };
    }
    return { ok: false, field: 'params', reason: `${method} takes no params` };
  }
  if (input === undefined || input === null) input = {};
  try {
    checkObject(input, spec, 'params');
    return { ok: true, params: JSON.parse(JSON.stringify(input)) as JsonValue };
  } catch (err) {
    if (err instanceof Invalid) return { ok: false, field: err.field, reason: err.reason };
    throw err;
  }
}

class Invalid extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

function join(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  return path === 'params' ? key : `${path}.${key}`;
}

function checkObject(value: unknown, spec: ParamsSpec, path: string): void {
  if (!isPlainObject(value)) throw new Invalid(path, 'must be an object');
  for (const key of Object.keys(value)) {
    if (!Object.prototype.hasOwnProperty.call(spec, key)) throw new Invalid(join(path, key), 'unknown field');
  }
  for (const [key, field] of Object.entries(spec)) {
    const v = value[key];
    if (v === undefined) {
      if (!field.optional) throw new Invalid(join(path, key), 'is required');
      continue;
    }
    checkField(v, field, join(path, key));
  }
}

function checkString(value: unknown, path: string, minLength = 0, maxLength = Number.POSITIVE_INFINITY): asserts value is string {
  if (typeof value !== 'string') throw new Invalid(path, 'must be a string');
  if (value.length < minLength) throw new Invalid(path, minLength === 1 ? 'must not be empty' : `must have at least ${minLength} characters`);
  if (value.length > maxLength) throw new Invalid(path, `must have at most ${maxLength} characters`);
}

function checkField(value: unknown, field: FieldSpec, path: string): void {
  switch (field.kind) {
    case 'string':
      if (value === null && field.nullable) return;
      checkString(value, path, field.minLength, field.maxLength);
      return;
    case 'integer':
      if (value === null && field.nullable) return;
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new Invalid(path, 'must be an integer');
      if (field.min !== undefined && value < field.min) throw new Invalid(path, `must be >= ${field.min}`);
      if (field.max !== undefined && value > field.max) throw new Invalid(path, `must be <= ${field.max}`);
      return;
    case 'number':
      if (typeof value !== 'number' || !Number.isFinite(value)) throw new Invalid(path, 'must be a number');
      if (field.exclusiveMin !== undefined && value <= field.exclusiveMin) throw new Invalid(path, `must be > ${field.exclusiveMin}`);
      if (field.min !== undefined && value < field.min) throw new Invalid(path, `must be >= ${field.min}`);
      if (field.max !== undefined && value > field.max) throw new Invalid(path, `must be <= ${field.max}`);
      return;
    case 'enum':
      if (typeof value !== 'string' || !field.values.includes(value)) {
        throw new Invalid(path, `must be one of ${field.values.join(', ')}`);
      }
      return;
    case 'stringArray': {
      if (!Array.isArray(value)) throw new Invalid(path, 'must be an array');
      if (field.minItems !== undefined && value.length < field.minItems) throw new Invalid(path, `must have at least ${field.minItems} items`);
      if (field.maxItems !== undefined && value.length > field.maxItems) throw new Invalid(path, `must have at most ${field.maxItems} items`);
      value.forEach((item, i) => {
        checkString(item, join(path, i), field.minLength, field.maxLength);
        if (field.values && !field.values.includes(item)) throw new Invalid(join(path, i), `must be one of ${field.values.join(', ')}`);
      });
      return;
    }
    case 'jsonObject': {
      if (!isPlainObject(value)) throw new Invalid(path, 'must be an object');
      checkJson(value, path, 0);
      if (field.maxBytes !== undefined) {
        const bytes = Buffer.byteLength(JSON.stringify(value), 'utf8');
        if (bytes > field.maxBytes) throw new Invalid(path, `must be at most ${field.maxBytes} bytes as JSON (got ${bytes})`);
      }
      return;
    }
    case 'objectArray': {
      if (!Array.isArray(value)) throw new Invalid(path, 'must be an array');
      if (field.minItems !== undefined && value.length < field.minItems) throw new Invalid(path, `must have at least ${field.minItems} items`);
      if (field.maxItems !== undefined && value.length > field.maxItems) throw new Invalid(path, `must have at most ${field.maxItems} items`);
      value.forEach((item, i) => checkObject(item, field.item, join(path, i)));
      return;
    }
  }
}

/** Only JSON values: plain objects, arrays, strings, finite numbers, booleans, null. */
function checkJson(value: unknown, path: string, depth: number): void {
  if (depth > MAX_DEPTH) throw new Invalid(path, `is nested deeper than ${MAX_DEPTH} levels`);
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Invalid(path, 'must be a finite number');
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => checkJson(item, join(path, i), depth + 1));
    return;
  }
  if (isPlainObject(value)) {
    for (const [k, v] of Object.entries(value)) checkJson(v, join(path, k), depth + 1);
    return;
  }
  throw new Invalid(path, `is not a JSON value (${Object.prototype.toString.call(value)})`);
}
