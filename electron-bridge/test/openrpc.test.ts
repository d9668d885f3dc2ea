import { test } from 'node:test';
import assert from 'node:assert/strict';

import { checkAgainstOpenRpc } from '../src/openrpc';
import {
  GRAPH_TASK_FIELDS,
  METHOD_SPECS,
  NOTIFICATION_FIELDS,
  TASK_FIELDS,
  type FieldSpec,
  type JsonValue,
  type MethodName,
  type OpenRpcDocument,
  type ParamsSpec,
} from '../src/protocol';

/** The JSON Schema a sidecar would state for a bridge field spec, bounds included. */
function schemaOf(f: FieldSpec): { [key: string]: JsonValue } {
  const bounds = (pairs: Array<[string, number | undefined]>) => Object.fromEntries(pairs.filter(([, v]) => v !== undefined)) as { [key: string]: JsonValue };
  switch (f.kind) {
    case 'string':
      return { type: 'string', ...bounds([['minLength', f.minLength], ['maxLength', f.maxLength]]) };
    case 'integer':
    case 'number':
      return { type: f.kind, ...bounds([['minimum', f.min], ['maximum', f.max], ['exclusiveMinimum', f.kind === 'number' ? f.exclusiveMin : undefined]]) };
    case 'enum':
      return { enum: [...f.values] };
    case 'stringArray':
      return {
        type: 'array',
        items: f.values ? { enum: [...f.values] } : { type: 'string', ...bounds([['minLength', f.minLength], ['maxLength', f.maxLength]]) },
        ...bounds([['minItems', f.minItems], ['maxItems', f.maxItems]]),
      };
    case 'jsonObject':
      return { type: 'object' };
    case 'objectArray':
      return {
        type: 'array',
        items: { type: 'object', properties: Object.fromEntries(Object.entries(f.item).map(([k, v]) => [k, schemaOf(v)])) },
        ...bounds([['minItems', f.minItems], ['maxItems', f.maxItems]]),
      };
  }
}

/** An OpenRPC document that describes exactly what the bridge types. */
function matchingDoc(options: { withGraph?: boolean } = {}): OpenRpcDocument {
  const withGraph = options.withGraph ?? true;
  const methods = (Object.keys(METHOD_SPECS) as MethodName[])
    .filter((m) => m !== 'rpc.discover' && (withGraph || !METHOD_SPECS[m].graph))
    .map((name) => {
      const spec = (METHOD_SPECS[name].params ?? {}) as ParamsSpec;
      const params = Object.entries(spec)
        .filter(([p]) => withGraph || !['ref', 'dependsOn', 'onChildFailure', 'weight', 'include'].includes(p))
        .map(([p, f]) => ({ name: p, required: !f.optional, schema: schemaOf(f) }));
      return { name, params, result: { name: 'result', schema: {} } };
    });
  return {
    'x-notifications': Object.entries(NOTIFICATION_FIELDS)
      .filter(([n]) => withGraph || n !== 'queue.updated')
      .map(([name, fields]) => ({ name, params: { type: 'object', required: [...fields] } })),
    openrpc: '1.2.6',
    info: { title: 'task-sidecar', version: '0.1.0' },
    methods,
    components: {
      schemas: {
        Task: {
          type: 'object',
          properties: Object.fromEntries(TASK_FIELDS.filter((f) => withGraph || !(GRAPH_TASK_FIELDS as readonly string[]).includes(f)).map((f) => [f, {}])),
        },
      },
    },
  };
}

test('a document describing the same methods, params and Task has no mismatches', () => {
  assert.deepEqual(checkAgainstOpenRpc(matchingDoc()), []);
});

test('a renamed param is caught in both directions', () => {
  const doc = matchingDoc();
  const get = doc.methods.find((m) => m.name === 'tasks.get')!;
  get.params = get.params!.map((p) => (p.name === 'id' ? { ...p, name: 'taskId' } : p));
  const kinds = checkAgainstOpenRpc(doc).map((m) => `${m.kind} ${m.method} ${m.param}`);
  assert.deepEqual(kinds.sort(), ['param-missing-in-bridge tasks.get taskId', 'param-missing-in-document tasks.get id']);
});

test('a missing method, an unknown method, a required flag and a Task field are caught', () => {
  const doc = matchingDoc();
  doc.methods = doc.methods.filter((m) => m.name !== 'tasks.retry');
  doc.methods.push({ name: 'tasks.archive', params: [{ name: 'id', required: true }] });
  const list = doc.methods.find((m) => m.name === 'tasks.list')!;
  list.params = list.params!.map((p) => (p.name === 'limit' ? { ...p, required: true } : p));
  const schemas = doc.components!.schemas! as Record<string, { properties: Record<string, unknown> }>;
  delete schemas['Task']!.properties['version'];
  schemas['Task']!.properties['owner'] = {};
  const kinds = checkAgainstOpenRpc(doc).map((m) => m.kind).sort();
  assert.deepEqual(kinds, [
    'method-missing-in-bridge',
    'method-missing-in-document',
    'param-required-mismatch',
    'task-field-missing-in-bridge',
    'task-field-missing-in-document',
  ]);
});

test('graph methods may be absent only when allowed (a sidecar before issue 4)', () => {
  const doc = matchingDoc({ withGraph: false });
  assert.deepEqual(checkAgainstOpenRpc(doc, { allowMissingGraph: true }), []);
  const strict = checkAgainstOpenRpc(doc).map((m) => m.method);
  for (const m of ['tasks.tree', 'tasks.pause', 'tasks.resume', 'queue.pause', 'queue.resume', 'queue.setConcurrency', 'queue.status']) assert.ok(strict.includes(m), m);
});

test('createMany item fields are compared when the document spells out the item schema via $ref', () => {
  const doc = matchingDoc();
  doc.components!.schemas!['CreateItem'] = { type: 'object', properties: { type: {}, details: {}, parentID: {} } };
  const cm = doc.methods.find((m) => m.name === 'tasks.createMany')!;
  cm.params = [{ name: 'tasks', required: true, schema: { type: 'array', items: { $ref: '#/components/schemas/CreateItem' } } }];
  const found = checkAgainstOpenRpc(doc).map((m) => m.param);
  assert.ok(found.includes('tasks[].parentId'));
  assert.ok(found.includes('tasks[].parentID'));
});

test('notifications are compared with x-notifications (names and fields)', () => {
  const doc = matchingDoc();
  const notes = doc['x-notifications']!;
  notes.push({ name: 'task.progress', params: { type: 'object' } });
  const updated = notes.find((n) => n.name === 'task.updated')!;
  updated.params = { type: 'object', required: ['seq', 'task', 'ts'] };
  doc['x-notifications'] = notes.filter((n) => n.name !== 'task.deleted');
  const kinds = checkAgainstOpenRpc(doc).map((m) => `${m.kind} ${m.method}${m.param ? ` ${m.param}` : ''}`).sort();
  assert.deepEqual(kinds, [
    'notification-field-mismatch task.updated ts',
    'notification-missing-in-bridge task.progress',
    'notification-missing-in-document task.deleted',
  ]);
});

test('param bounds (minLength, maxLength, minItems, maxItems, minimum, maximum, exclusiveMinimum) are compared with the document', () => {
  const doc = matchingDoc();
  const schemaOfParam = (method: string, param: string) =>
    doc.methods.find((m) => m.name === method)!.params!.find((p) => p.name === param)!.schema as { [key: string]: JsonValue };
  schemaOfParam('tasks.list', 'cursor')['maxLength'] = 100; // the sidecar tightened a bound
  schemaOfParam('tasks.prune', 'statuses')['minItems'] = 2;
  delete schemaOfParam('tasks.create', 'runAt')['maximum']; // a bound only the bridge has: its own cap, not reported
  schemaOfParam('tasks.create', 'weight')['exclusiveMinimum'] = 1;
  schemaOfParam('queue.setConcurrency', 'limit')['maximum'] = 512;
  (schemaOfParam('tasks.create', 'dependsOn')['items'] as { [key: string]: JsonValue })['minLength'] = 2; // item bounds of a string array
  (schemaOfParam('tasks.list', 'type')['items'] as { [key: string]: JsonValue })['minLength'] = 1; // a bound the bridge lacks
  const items = schemaOfParam('tasks.createMany', 'tasks')['items'] as { properties: { [key: string]: { [key: string]: JsonValue } } };
  items.properties['priority']!['minimum'] = 0; // inside createMany items
  const found = checkAgainstOpenRpc(doc).map((m) => `${m.kind} ${m.method} ${m.param}`).sort();
  assert.deepEqual(found, [
    'param-constraint-mismatch queue.setConcurrency limit',
    'param-constraint-mismatch tasks.create dependsOn[]',
    'param-constraint-mismatch tasks.create weight',
    'param-constraint-mismatch tasks.createMany tasks[].priority',
    'param-constraint-mismatch tasks.list cursor',
    'param-constraint-mismatch tasks.list type[]',
    'param-constraint-mismatch tasks.prune statuses',
  ]);
  const cursor = checkAgainstOpenRpc(doc).find((m) => m.param === 'cursor')!;
  assert.equal(cursor.detail, 'tasks.list: param "cursor" maxLength is 200 in the bridge but 100 in the document');
  const type = checkAgainstOpenRpc(doc).find((m) => m.param === 'type[]')!;
  assert.equal(type.detail, 'tasks.list: param "type[]" minLength is 0 in the bridge but 1 in the document');
});
