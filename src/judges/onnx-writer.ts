// A minimal ONNX model writer: enough of onnx.proto (ModelProto, GraphProto, NodeProto, TensorProto,
// ValueInfoProto, AttributeProto) to write small graphs in code. The lab uses it for test fixtures (a tiny
// CLIP-interface model whose outputs a plain TypeScript computation can check); it is not a converter.
// Protobuf is encoded by hand (varints and length-delimited fields), so no schema file is needed. Field
// numbers are those of onnx/onnx.proto (IR version 8); the ones used are written next to each message.

/** ONNX TensorProto.DataType values used here. */
export const ONNX_FLOAT = 1;
export const ONNX_INT64 = 7;

export type OnnxElemType = typeof ONNX_FLOAT | typeof ONNX_INT64;

export interface OnnxTensor {
  name: string;
  dims: readonly number[];
  /** Float32 or int64 (as bigint) values, in row-major order. */
  data: Float32Array | BigInt64Array;
}

export interface OnnxValueInfo {
  name: string;
  elemType: OnnxElemType;
  /** A number for a fixed dimension, a string for a named (symbolic) one such as 'batch'. */
  shape: readonly (number | string)[];
}

export type OnnxAttribute = { name: string; int: number } | { name: string; float: number } | { name: string; ints: readonly number[] };

export interface OnnxNode {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attributes?: readonly OnnxAttribute[];
}

export interface OnnxGraph {
  name: string;
  nodes: readonly OnnxNode[];
  initializers: readonly OnnxTensor[];
  inputs: readonly OnnxValueInfo[];
  outputs: readonly OnnxValueInfo[];
}

/** Appends protobuf fields to a growing byte list. */
class ProtoWriter {
  private readonly bytes: number[] = [];

  private varint(value: bigint | number): void {
    // Negative int64 values are written as their two's-complement 64-bit pattern (10 bytes), as protobuf does.
    let v = BigInt.asUintN(64, BigInt(value));
    while (v >= 0x80n) {
      this.bytes.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.bytes.push(Number(v));
  }

  private tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  int(field: number, value: bigint | number): this {
    this.tag(field, 0);
    this.varint(value);
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(new Float32Array([value]).buffer);
    this.bytes.push(...b);
    return this;
  }

  bytesField(field: number, value: Uint8Array): this {
    this.tag(field, 2);
    this.varint(value.length);
    for (const b of value) this.bytes.push(b);
    return this;
  }

  string(field: number, value: string): this {
    return this.bytesField(field, new TextEncoder().encode(value));
  }

  message(field: number, build: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter();
    build(inner);
    return this.bytesField(field, inner.finish());
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

// TensorProto: dims=1, data_type=2, name=8, raw_data=9 (little-endian values).
function writeTensor(w: ProtoWriter, t: OnnxTensor): void {
  const count = t.dims.reduce((a, b) => a * b, 1);
  if (t.data.length !== count) throw new RangeError(`tensor ${t.name}: dims [${t.dims.join(', ')}] need ${count} values, got ${t.data.length}`);
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.data instanceof Float32Array ? ONNX_FLOAT : ONNX_INT64);
  w.string(8, t.name);
  // Both typed arrays are little-endian on every platform JavaScript runs on that ONNX Runtime supports.
  w.bytesField(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

// ValueInfoProto: name=1, type=2; TypeProto: tensor_type=1; TypeProto.Tensor: elem_type=1, shape=2;
// TensorShapeProto: dim=1; Dimension: dim_value=1, dim_param=2.
function writeValueInfo(w: ProtoWriter, v: OnnxValueInfo): void {
  w.string(1, v.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, v.elemType);
      tensor.message(2, (shape) => {
        for (const d of v.shape) shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
      });
    }),
  );
}

// AttributeProto: name=1, f=2, i=3, ints=8, type=20 (AttributeType FLOAT=1, INT=2, INTS=7).
function writeAttribute(w: ProtoWriter, a: OnnxAttribute): void {
  w.string(1, a.name);
  if ('int' in a) w.int(3, a.int).int(20, 2);
  else if ('float' in a) w.float(2, a.float).int(20, 1);
  else {
    for (const i of a.ints) w.int(8, i);
    w.int(20, 7);
  }
}

// NodeProto: input=1, output=2, name=3, op_type=4, attribute=5.
function writeNode(w: ProtoWriter, n: OnnxNode, index: number): void {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, `${n.opType}_${index}`);
  w.string(4, n.opType);
  for (const a of n.attributes ?? []) w.message(5, (m) => writeAttribute(m, a));
}

/**
 * The bytes of an ONNX model holding `graph`, for the default operator set at `opset`.
 * ModelProto: ir_version=1, producer_name=2, graph=7, opset_import=8 (OperatorSetIdProto: domain=1, version=2).
 * GraphProto: node=1, name=2, initializer=5, input=11, output=12.
 */
export function writeOnnxModel(graph: OnnxGraph, options: { opset?: number; producer?: string } = {}): Uint8Array {
  const w = new ProtoWriter();
  w.int(1, 8);
  w.string(2, options.producer ?? 'tpo-lab');
  w.message(7, (g) => {
    graph.nodes.forEach((n, i) => g.message(1, (m) => writeNode(m, n, i)));
    g.string(2, graph.name);
    for (const t of graph.initializers) g.message(5, (m) => writeTensor(m, t));
    for (const v of graph.inputs) g.message(11, (m) => writeValueInfo(m, v));
    for (const v of graph.outputs) g.message(12, (m) => writeValueInfo(m, v));
  });
  w.message(8, (o) => o.string(1, '').int(2, options.opset ?? 13));
  return w.finish();
}
