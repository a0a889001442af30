// hwcov's WebNN page: builds the graphs hwcov-webnn lowers (lower.rs) and runs them. Every
// decision is made on the Rust side; this file only makes the MLGraphBuilder calls it is given.
// Tensors cross as binary: fetched from /blob/<id>, sent back to /out/<id>.
const state = { context: null, graphs: new Map() };

async function fetchBytes(id) {
  const r = await fetch('/blob/' + id);
  if (!r.ok) throw new Error('blob ' + id + ': HTTP ' + r.status);
  return await r.arrayBuffer();
}

function typed(dataType, buffer) {
  switch (dataType) {
    case 'float32': return new Float32Array(buffer);
    case 'float16': return new Uint16Array(buffer);
    case 'int64': return new BigInt64Array(buffer);
    case 'int32': return new Int32Array(buffer);
    case 'uint8': return new Uint8Array(buffer);
    case 'int8': return new Int8Array(buffer);
    default: throw new Error('no typed array for ' + dataType);
  }
}

// A scalar of `dataType` holding `value` (a constant the lowering makes: Softplus's one, a zero).
function scalar(dataType, value) {
  const a = typed(dataType, new ArrayBuffer(dataType === 'int64' ? 8 : dataType === 'float16' ? 2 : dataType === 'uint8' ? 1 : 4));
  a[0] = dataType === 'int64' ? BigInt(value) : value;
  return a;
}

window.hwcov = {
  // The context on WebNN's CPU device; says what it is.
  async open() {
    if (!navigator.ml) throw new Error('navigator.ml is missing: this browser has no WebNN');
    state.context = await navigator.ml.createContext({ deviceType: 'cpu' });
    return { userAgent: navigator.userAgent, ops: Object.keys(state.context.opSupportLimits()).length };
  },

  // Builds the program in blob `programId` (constants in the blobs it names) as graph `key`.
  async build(key, programId, constantIds) {
    const program = JSON.parse(new TextDecoder().decode(await fetchBytes(programId)));
    const b = new MLGraphBuilder(state.context);
    const vals = new Map();
    const resolve = (a) => {
      if (Array.isArray(a)) return a.map(resolve);
      if (a !== null && typeof a === 'object') {
        if ('$' in a) {
          const v = vals.get(a['$']);
          if (v === undefined) throw new Error('operand ' + a['$'] + ' used before it is made');
          return v;
        }
        const o = {};
        for (const [k, v] of Object.entries(a)) o[k] = resolve(v);
        return o;
      }
      return a;
    };
    for (const i of program.inputs) vals.set(i.id, b.input(i.name, { dataType: i.dataType, shape: i.shape }));
    for (let j = 0; j < program.constants.length; j++) {
      const c = program.constants[j];
      vals.set(c.id, b.constant({ dataType: c.dataType, shape: c.shape }, typed(c.dataType, await fetchBytes(constantIds[j]))));
    }
    for (const op of program.ops) {
      let r;
      try {
        if (op.call === 'constant') r = b.constant(op.args[0], scalar(op.args[0].dataType, op.args[1]));
        else r = b[op.call](...op.args.map(resolve));
      } catch (e) {
        throw new Error(op.call + ' making ' + op.outs.join(', ') + ': ' + e.message);
      }
      if (op.outs.length > 1) op.outs.forEach((n, i) => vals.set(n, r[i]));
      else vals.set(op.outs[0], r);
    }
    const outs = {};
    for (const o of program.outputs) {
      outs[o.name] = vals.get(o.id);
      if (outs[o.name] === undefined) throw new Error('output ' + o.name + ' (' + o.id + ') was not made');
    }
    const graph = await b.build(outs);
    state.graphs.set(key, { graph, program });
    return program.ops.length;
  },

  // Runs graph `key` on the inputs in the given blobs and sends each output to its upload id.
  async run(key, inputIds, outputIds) {
    const { graph, program } = state.graphs.get(key);
    const ctx = state.context;
    const inputs = {}, outputs = {};
    for (const i of program.inputs) {
      const t = await ctx.createTensor({ dataType: i.dataType, shape: i.shape, writable: true });
      ctx.writeTensor(t, typed(i.dataType, await fetchBytes(inputIds[i.name])));
      inputs[i.name] = t;
    }
    for (const o of program.outputs) {
      outputs[o.name] = await ctx.createTensor({ dataType: o.dataType, shape: o.shape, readable: true });
    }
    ctx.dispatch(graph, inputs, outputs);
    for (const o of program.outputs) {
      const bytes = await ctx.readTensor(outputs[o.name]);
      const r = await fetch('/out/' + outputIds[o.name], { method: 'POST', body: bytes });
      if (!r.ok) throw new Error('sending ' + o.name + ' back: HTTP ' + r.status);
    }
    for (const t of [...Object.values(inputs), ...Object.values(outputs)]) t.destroy();
    return true;
  },

  forget(key) {
    const g = state.graphs.get(key);
    if (g) g.graph.destroy();
    state.graphs.delete(key);
  },
};
