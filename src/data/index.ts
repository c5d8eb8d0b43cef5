// The dataset layer (browser-safe): model, operations, import, export, image preparation. Node adapters: ./node-fs, ./decode-node.
export * from './vocabulary';
export * from './types';
export * from './dataset';
export * from './image';
export * from './source';
export * from './records';
export * from './import';
export * from './export';
export * from './pixels';
export * from './decode-browser';
export * from './preference-records';
