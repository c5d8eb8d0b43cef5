// Caption editing: the OpenAI-compatible client, the four principles, validation, the LLM and rule editors.
export * from './types';
export * from './client';
export * from './extract';
export * from './principles';
export * from './validate';
export * from './editor';
export * from './rules';
export * from './generate';
export * from './settings';
export { mulberry32, hashSeed, seededRandom } from '../util/random';
