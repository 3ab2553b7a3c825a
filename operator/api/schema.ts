/**
 * A tiny schema language: each builder returns an OpenAPI v3 (structural) schema node for the
 * CRD *and* carries the TypeScript type of the value it describes. The AbacusJob schema is
 * written once with these builders; the CRD YAML is generated from it (`npm run gen:crd`) and
 * the operator's types are derived from it with `TypeOf`, so the two cannot disagree.
 *
 * Presence: a field is `required` (the user must set it), `defaulted` (the API server fills it
 * in, so it is present on every stored object) or `optional`. Required and defaulted fields are
 * non-optional in the derived type; only optional fields may be `undefined`.
 */

export interface CelRule {
  readonly rule: string;
  readonly message?: string;
  readonly messageExpression?: string;
  readonly reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
  readonly fieldPath?: string;
}

/** The subset of JSONSchemaProps (apiextensions.k8s.io/v1) that this project uses. */
export interface JsonSchema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  default?: unknown;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: JsonSchema;
  items?: JsonSchema;
  enum?: readonly unknown[];
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  maxProperties?: number;
  anyOf?: JsonSchema[];
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  'x-kubernetes-map-type'?: 'atomic' | 'granular';
  'x-kubernetes-validations'?: CelRule[];
}

export type Presence = 'required' | 'defaulted' | 'optional';

export interface Schema<T, P extends Presence = Presence> {
  readonly json: JsonSchema;
  readonly presence: P;
  /** Phantom: never set at run time, only carries the value type. */
  readonly __type?: T;
}

export type TypeOf<S> = S extends Schema<infer T, Presence> ? T : never;

interface Common<T> {
  readonly description: string;
  readonly required?: true;
  readonly default?: T;
  readonly validations?: readonly CelRule[];
}

type PresenceOf<O> = O extends { required: true } ? 'required' : O extends { default: unknown } ? 'defaulted' : 'optional';

type Flatten<T> = { [K in keyof T]: T[K] } & {};

export type Props = Record<string, Schema<unknown>>;

type OptionalKeys<P extends Props> = { [K in keyof P]: P[K] extends Schema<unknown, 'optional'> ? K : never }[keyof P];
type PresentKeys<P extends Props> = Exclude<keyof P, OptionalKeys<P>>;

export type ObjectOf<P extends Props> = Flatten<
  { -readonly [K in PresentKeys<P>]: TypeOf<P[K]> } & { -readonly [K in OptionalKeys<P>]?: TypeOf<P[K]> }
>;

function node<T, O extends Common<unknown>>(json: JsonSchema, o: O): Schema<T, PresenceOf<O>> {
  const out: JsonSchema = { ...json, description: o.description };
  if (o.default !== undefined) out.default = o.default;
  if (o.validations !== undefined && o.validations.length > 0) out['x-kubernetes-validations'] = [...o.validations];
  const presence = (o.required ? 'required' : o.default !== undefined ? 'defaulted' : 'optional') as PresenceOf<O>;
  return { json: out, presence };
}

interface StringOpts extends Common<string> {
  readonly pattern?: string;
  readonly format?: string;
  readonly minLength?: number;
  readonly maxLength?: number;
}

export function string<const O extends StringOpts>(o: O): Schema<string, PresenceOf<O>> {
  const { pattern, format, minLength, maxLength } = o;
  return node<string, O>(strip({ type: 'string', pattern, format, minLength, maxLength }), o);
}

export function enumeration<const V extends readonly string[], const O extends Common<V[number]>>(
  values: V,
  o: O,
): Schema<V[number], PresenceOf<O>> {
  return node<V[number], O>({ type: 'string', enum: [...values] }, o);
}

interface IntegerOpts extends Common<number> {
  readonly minimum?: number;
  readonly maximum?: number;
}

export function integer<const O extends IntegerOpts>(o: O): Schema<number, PresenceOf<O>> {
  const { minimum, maximum } = o;
  return node<number, O>(strip({ type: 'integer', minimum, maximum }), o);
}

export function boolean<const O extends Common<boolean>>(o: O): Schema<boolean, PresenceOf<O>> {
  return node<boolean, O>({ type: 'boolean' }, o);
}

interface ArrayOpts<T> extends Common<T[]> {
  readonly minItems?: number;
  readonly maxItems?: number;
  readonly listType?: 'atomic' | 'set' | 'map';
  readonly listMapKeys?: string[];
}

export function array<I extends Schema<unknown>, const O extends ArrayOpts<TypeOf<I>>>(
  items: I,
  o: O,
): Schema<TypeOf<I>[], PresenceOf<O>> {
  const { minItems, maxItems, listType, listMapKeys } = o;
  return node<TypeOf<I>[], O>(
    strip({
      type: 'array',
      items: items.json,
      minItems,
      maxItems,
      'x-kubernetes-list-type': listType,
      'x-kubernetes-list-map-keys': listMapKeys,
    }),
    o,
  );
}

export function object<P extends Props, const O extends Common<Partial<ObjectOf<P>>>>(
  props: P,
  o: O,
): Schema<ObjectOf<P>, PresenceOf<O>> {
  const properties: Record<string, JsonSchema> = {};
  const required: string[] = [];
  for (const [name, child] of Object.entries(props)) {
    properties[name] = child.json;
    if (child.presence === 'required') required.push(name);
  }
  return node<ObjectOf<P>, O>(strip({ type: 'object', properties, required: required.length > 0 ? required : undefined }), o);
}

/** A string-keyed map of strings (labels, node selectors). */
export function stringMap<const O extends Common<Record<string, string>> & { maxProperties?: number }>(
  o: O,
): Schema<Record<string, string>, PresenceOf<O>> {
  return node<Record<string, string>, O>(strip({ type: 'object', additionalProperties: { type: 'string' }, maxProperties: o.maxProperties }), o);
}

/** A Kubernetes quantity (`500m`, `2Gi`, `1`), as the API server's own schemas spell it. */
export const QUANTITY_PATTERN = '^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$';

export function quantityMap<const O extends Common<Record<string, string | number>>>(o: O): Schema<Record<string, string | number>, PresenceOf<O>> {
  return node<Record<string, string | number>, O>(
    {
      type: 'object',
      additionalProperties: {
        'x-kubernetes-int-or-string': true,
        anyOf: [{ type: 'integer' }, { type: 'string' }],
        pattern: QUANTITY_PATTERN,
      },
    },
    o,
  );
}

/**
 * An object whose schema belongs to Kubernetes itself (affinity, a toleration): kept as is and
 * checked by the API server when the operator puts it into the pod template.
 */
export function opaque<T>(o: Common<T>): Schema<T, 'optional'> {
  return node<T, Common<T>>({ type: 'object', 'x-kubernetes-preserve-unknown-fields': true }, o);
}

function strip(json: Record<string, unknown>): JsonSchema {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(json)) if (v !== undefined) out[k] = v;
  return out;
}

/**
 * Applies a schema's defaults to a value the way the API server does on admission (a default
 * fills an absent field, then defaulting descends into it). The operator runs this on what it
 * reads, so code never sees an undefaulted field even if the object predates a default; tests
 * run it on the examples to get what the API server would store.
 */
export function applyDefaults(schema: JsonSchema, value: unknown): unknown {
  if (Array.isArray(value)) {
    return schema.items === undefined ? value : value.map((v) => applyDefaults(schema.items!, v));
  }
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  if (schema.properties !== undefined) {
    for (const [name, child] of Object.entries(schema.properties)) {
      if (out[name] === undefined && child.default !== undefined) out[name] = structuredClone(child.default);
      if (out[name] !== undefined) out[name] = applyDefaults(child, out[name]);
    }
  } else if (schema.additionalProperties !== undefined) {
    for (const [k, v] of Object.entries(out)) out[k] = applyDefaults(schema.additionalProperties, v);
  }
  return out;
}
