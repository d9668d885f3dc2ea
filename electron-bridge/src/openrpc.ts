/**
 * Compare the bridge's protocol table (protocol.ts) with the sidecar's own description of its
 * methods (the OpenRPC document `rpc.discover` answers). An empty list means they agree.
 */
import {
  GRAPH_CREATE_PARAMS,
  GRAPH_TASK_FIELDS,
  METHOD_SPECS,
  NOTIFICATION_FIELDS,
  TASK_FIELDS,
  type FieldSpec,
  type JsonValue,
  type MethodName,
  type OpenRpcDocument,
  type ParamsSpec,
} from './protocol';

export interface OpenRpcMismatch {
  kind:
    | 'method-missing-in-document'
    | 'method-missing-in-bridge'
    | 'param-missing-in-document'
    | 'param-missing-in-bridge'
    | 'param-required-mismatch'
    | 'param-constraint-mismatch'
    | 'task-field-missing-in-document'
    | 'task-field-missing-in-bridge'
    | 'notification-missing-in-document'
    | 'notification-missing-in-bridge'
    | 'notification-field-mismatch';
  method?: string;
  param?: string;
  detail: string;
}

export interface OpenRpcCheckOptions {
  /**
   * Tolerate the absence of issue-4 graph methods/params (`graph: true` in METHOD_SPECS) from the
   * document, for a sidecar that does not implement task graphs yet. Default false.
   */
  allowMissingGraph?: boolean;
}

/** Methods that are not part of the document itself (OpenRPC leaves rpc.discover out). */
const NOT_DESCRIBED: readonly string[] = ['rpc.discover'];

export function checkAgainstOpenRpc(doc: OpenRpcDocument, options: OpenRpcCheckOptions = {}): OpenRpcMismatch[] {
  const out: OpenRpcMismatch[] = [];
  const allowGraph = options.allowMissingGraph ?? false;
  const docMethods = new Map((doc.methods ?? []).map((m) => [m.name, m] as const));

  for (const name of Object.keys(METHOD_SPECS) as MethodName[]) {
    if (NOT_DESCRIBED.includes(name)) continue;
    const spec = METHOD_SPECS[name];
    const described = docMethods.get(name);
    if (!described) {
      if (!(allowGraph && spec.graph)) out.push({ kind: 'method-missing-in-document', method: name, detail: `${name} is typed in the bridge but the sidecar does not describe it` });
      continue;
    }
    const params = (spec.params ?? {}) as ParamsSpec;
    const docParams = new Map((described.params ?? []).map((p) => [p.name, p] as const));
    for (const [param, field] of Object.entries(params) as [string, FieldSpec][]) {
      const dp = docParams.get(param);
      if (!dp) {
        const graphParam = name === 'tasks.create' || name === 'tasks.createMany' ? (GRAPH_CREATE_PARAMS as readonly string[]).includes(param) : false;
        const graphInclude = name === 'tasks.get' && param === 'include';
        if (!(allowGraph && (graphParam || graphInclude))) {
          out.push({ kind: 'param-missing-in-document', method: name, param, detail: `${name}: param "${param}" is typed in the bridge but not in the document` });
        }
        continue;
      }
      const required = dp.required === true;
      if (required !== !field.optional) {
        out.push({
          kind: 'param-required-mismatch',
          method: name,
          param,
          detail: `${name}: param "${param}" is ${field.optional ? 'optional' : 'required'} in the bridge but ${required ? 'required' : 'optional'} in the document`,
        });
      }
      compareConstraints(doc, name, param, field, dp.schema, out);
    }
    for (const param of docParams.keys()) {
      if (!Object.prototype.hasOwnProperty.call(params, param)) {
        out.push({ kind: 'param-missing-in-bridge', method: name, param, detail: `${name}: the document has param "${param}" the bridge does not type` });
      }
    }
    // createMany items are create params: compare the item schema when the document spells it out.
    if (name === 'tasks.createMany') {
      const itemProps = createManyItemProperties(doc, docParams.get('tasks')?.schema);
      if (itemProps) {
        const createSpec = (METHOD_SPECS['tasks.createMany'].params.tasks as { item: ParamsSpec }).item;
        for (const p of Object.keys(createSpec)) {
          if (!itemProps.includes(p) && !(allowGraph && (GRAPH_CREATE_PARAMS as readonly string[]).includes(p))) {
            out.push({ kind: 'param-missing-in-document', method: name, param: `tasks[].${p}`, detail: `${name}: item field "${p}" is typed in the bridge but not in the document` });
          }
        }
        for (const p of itemProps) {
          if (!Object.prototype.hasOwnProperty.call(createSpec, p)) {
            out.push({ kind: 'param-missing-in-bridge', method: name, param: `tasks[].${p}`, detail: `${name}: the document has item field "${p}" the bridge does not type` });
          }
        }
      }
    }
  }
  for (const name of docMethods.keys()) {
    if (!Object.prototype.hasOwnProperty.call(METHOD_SPECS, name) && !NOT_DESCRIBED.includes(name)) {
      out.push({ kind: 'method-missing-in-bridge', method: name, detail: `the sidecar describes ${name}, which the bridge does not type` });
    }
  }

  const taskSchema = resolveRef(doc, doc.components?.schemas?.['Task']);
  const taskProps = propertiesOf(taskSchema);
  if (taskProps) {
    for (const f of TASK_FIELDS) {
      if (!taskProps.includes(f) && !(allowGraph && (GRAPH_TASK_FIELDS as readonly string[]).includes(f))) out.push({ kind: 'task-field-missing-in-document', param: f, detail: `Task.${f} is typed in the bridge but not in the document's Task schema` });
    }
    for (const f of taskProps) {
      if (!(TASK_FIELDS as readonly string[]).includes(f)) out.push({ kind: 'task-field-missing-in-bridge', param: f, detail: `the document's Task schema has "${f}", which the bridge does not type` });
    }
  }
  // Notifications (x-notifications), when the document lists them.
  const notes = doc['x-notifications'];
  if (Array.isArray(notes)) {
    const byName = new Map(notes.map((n) => [n.name, n] as const));
    for (const [name, fields] of Object.entries(NOTIFICATION_FIELDS) as [string, readonly string[]][]) {
      const described = byName.get(name);
      if (!described) {
        if (!(allowGraph && name === 'queue.updated')) {
          out.push({ kind: 'notification-missing-in-document', method: name, detail: `notification ${name} is typed in the bridge but not in x-notifications` });
        }
        continue;
      }
      const schema = resolveRef(doc, described.params);
      const docFields = new Set([...(propertiesOf(schema) ?? []), ...requiredOf(schema)]);
      if (docFields.size === 0) continue; // the document does not spell the fields out
      for (const f of fields) {
        if (!docFields.has(f)) out.push({ kind: 'notification-field-mismatch', method: name, param: f, detail: `${name}: field "${f}" is typed in the bridge but not in the document` });
      }
      for (const f of docFields) {
        if (!fields.includes(f)) out.push({ kind: 'notification-field-mismatch', method: name, param: f, detail: `${name}: the document has field "${f}" the bridge does not type` });
      }
    }
    for (const name of byName.keys()) {
      if (!Object.prototype.hasOwnProperty.call(NOTIFICATION_FIELDS, name)) {
        out.push({ kind: 'notification-missing-in-bridge', method: name, detail: `the sidecar describes notification ${name}, which the bridge does not type` });
      }
    }
  }
  return out;
}

type BoundKey = 'minLength' | 'maxLength' | 'minItems' | 'maxItems' | 'min' | 'max' | 'exclusiveMin';

/** FieldSpec bounds and the JSON Schema keywords they stand for. */
const BOUNDS: ReadonlyArray<readonly [spec: BoundKey, keyword: string]> = [
  ['minLength', 'minLength'],
  ['maxLength', 'maxLength'],
  ['minItems', 'minItems'],
  ['maxItems', 'maxItems'],
  ['min', 'minimum'],
  ['max', 'maximum'],
  ['exclusiveMin', 'exclusiveMinimum'],
];

/**
 * A bound the document states must be the bridge's too: a looser one lets renderer input through
 * that the sidecar refuses, a tighter one refuses what it accepts. A bound only the bridge has is
 * its own cap on renderer input and is not reported. A string array's minLength/maxLength are its
 * items'; an object array's items are compared field by field.
 */
function compareConstraints(doc: OpenRpcDocument, method: string, param: string, field: FieldSpec, schemaIn: JsonValue | undefined, out: OpenRpcMismatch[]): void {
  const schema = asSchema(resolveRef(doc, schemaIn));
  if (!schema) return;
  const items = asSchema(resolveRef(doc, schema['items']));
  const bounds = field as { readonly [K in BoundKey]?: number }; // the kinds without bounds have none of these keys
  for (const [key, keyword] of BOUNDS) {
    const itemBound = field.kind === 'stringArray' && (key === 'minLength' || key === 'maxLength');
    const stated = itemBound ? items?.[keyword] : schema[keyword];
    if (typeof stated !== 'number') continue; // the document states no such bound
    // An absent lower bound on a length or a count is 0.
    const ours = bounds[key] ?? (key === 'minLength' || key === 'minItems' ? 0 : undefined);
    if (ours === stated) continue;
    const where = itemBound ? `${param}[]` : param;
    out.push({
      kind: 'param-constraint-mismatch',
      method,
      param: where,
      detail: `${method}: param "${where}" ${keyword} is ${ours === undefined ? 'not set' : String(ours)} in the bridge but ${stated} in the document`,
    });
  }
  if (field.kind === 'objectArray') {
    const props = asSchema(items ? resolveRef(doc, items['properties']) : undefined);
    if (!props) return;
    for (const [key, itemField] of Object.entries(field.item)) {
      if (props[key] !== undefined) compareConstraints(doc, method, `${param}[].${key}`, itemField, props[key], out);
    }
  }
}

function asSchema(value: JsonValue | undefined): { [key: string]: JsonValue } | null {
  return value && typeof value === 'object' && !Array.isArray(value) ? value : null;
}

function requiredOf(schema: JsonValue | undefined): string[] {
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) return [];
  const req = (schema as { required?: JsonValue }).required;
  return Array.isArray(req) ? req.filter((r): r is string => typeof r === 'string') : [];
}

function resolveRef(doc: OpenRpcDocument, schema: JsonValue | undefined, depth = 0): JsonValue | undefined {
  if (depth > 10 || !schema || typeof schema !== 'object' || Array.isArray(schema)) return schema;
  const ref = (schema as { $ref?: JsonValue }).$ref;
  if (typeof ref === 'string' && ref.startsWith('#/components/schemas/')) {
    return resolveRef(doc, doc.components?.schemas?.[ref.slice('#/components/schemas/'.length)], depth + 1);
  }
  return schema;
}

function propertiesOf(schema: JsonValue | undefined): string[] | null {
  if (!schema || typeof schema !== 'object' || Array.isArray(schema)) return null;
  const props = (schema as { properties?: JsonValue }).properties;
  if (!props || typeof props !== 'object' || Array.isArray(props)) return null;
  return Object.keys(props);
}

function createManyItemProperties(doc: OpenRpcDocument, schema: JsonValue | undefined): string[] | null {
  const s = resolveRef(doc, schema);
  if (!s || typeof s !== 'object' || Array.isArray(s)) return null;
  return propertiesOf(resolveRef(doc, (s as { items?: JsonValue }).items));
}
