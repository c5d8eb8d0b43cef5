// The rule-based caption editor: no LLM, no network. It finds a word or phrase that a principle's word
// lists know (a colour, a count, a spatial relation, a time of day...) and swaps it for one of another
// class in the same list ("red" -> "blue", "left" -> "right", "day" -> "night"). One swap per negative,
// so the edit stays subtle. Deterministic: the same seed, caption, principle and index give the same edit.

import { type Principle, type PrincipleChoice, PRINCIPLES } from '../data/vocabulary';
import { pick, seededRandom } from '../util/random';
import type { CaptionEditor, EditRequest, EditResult } from './types';
import { validateNegative, type ValidationOptions } from './validate';

/** Interchangeable-for-the-eye classes: a swap always goes to another class of the same group. */
export interface SwapGroup {
  name: string;
  principle: Principle;
  /** Each class lists synonyms (swapping within a class would be a paraphrase); the first is the one written. */
  classes: string[][];
  /** Words with many non-visual uses ("on"): used only when nothing else of the principle matches. */
  weak?: boolean;
}

const cls = (spec: string): string[][] => spec.split(',').map((c) => c.split('|').map((w) => w.trim()).filter(Boolean));

// ---- content: objects and counts (plural groups are derived) ----
const NOUN_GROUPS: Record<string, string> = {
  animals:
    'cat|kitten,dog|puppy,horse|pony,cow,sheep,bird,rabbit|bunny,fox,bear,lion,tiger,elephant,giraffe,zebra,deer,wolf,duck,owl,monkey,panda,penguin,squirrel,mouse,frog,butterfly,fish',
  people: 'man|guy,woman|lady,boy,girl,child|kid',
  vehicles: 'car,bus,truck,bicycle|bike,motorcycle|motorbike,train,boat,airplane|plane,helicopter,tractor',
  furniture: 'chair,table,sofa|couch,bed,desk,bench,stool',
  food: 'apple,banana,pear,pizza,cake,sandwich,donut|doughnut,burger|hamburger,strawberry,lemon,tomato,carrot,cupcake,cookie',
  tableware: 'cup|mug,bottle,vase,bowl,plate,teapot',
  objects: 'book,laptop|computer,phone|smartphone,clock,lamp,umbrella,ball,hat,bag|backpack,kite,balloon,candle',
  instruments: 'guitar,piano,violin,drum,trumpet',
  buildings: 'house,castle,church,tower,bridge,lighthouse,barn,cabin,skyscraper,temple',
  plants: 'tree,flower,rose,tulip,sunflower,cactus',
  shapes: 'circle,square,triangle,star,cube,sphere,cone,cylinder,pyramid',
};

const IRREGULAR_PLURALS: Record<string, string> = {
  man: 'men', woman: 'women', child: 'children', mouse: 'mice', sheep: 'sheep', deer: 'deer', fish: 'fish',
  wolf: 'wolves', person: 'people', goose: 'geese', cactus: 'cacti', tomato: 'tomatoes', potato: 'potatoes',
  guy: 'guys', kid: 'kids',
};

export function pluralize(noun: string): string {
  if (IRREGULAR_PLURALS[noun]) return IRREGULAR_PLURALS[noun];
  if (/(s|x|z|ch|sh)$/.test(noun)) return `${noun}es`;
  if (/[^aeiou]y$/.test(noun)) return `${noun.slice(0, -1)}ies`;
  return `${noun}s`;
}

const NUMBER_WORDS = 'two,three,four,five,six,seven,eight,nine,ten';
const COUNT_WORDS: Record<string, number> = { two: 2, three: 3, four: 4, five: 5, six: 6, seven: 7, eight: 8, nine: 9, ten: 10 };

// ---- attribute ----
const ATTRIBUTE_GROUPS: Record<string, string> = {
  colour: 'red,orange,yellow,green,blue,purple|violet,pink,brown,black,white,gray|grey,silver,golden|gold,turquoise|teal',
  material: 'wooden|wood,metal|metallic|steel|iron,plastic,stone|marble,leather,paper|cardboard,ceramic|porcelain,woolen|wool|knitted,concrete,brick,crystal',
  texture: 'smooth,rough,fluffy|furry,shiny|glossy,matte,striped,spotted|polka-dot,checkered|plaid,wrinkled,wet,dry',
  size: 'big|large|huge|giant|enormous,small|tiny|little',
  shape: 'round|circular,rectangular,triangular,oval,square-shaped,heart-shaped',
  age: 'old|elderly,young',
  era: 'ancient|antique,modern|futuristic',
  style: 'photo|photograph,painting|oil painting,watercolor|watercolour|watercolor painting,sketch|drawing|pencil drawing,cartoon|illustration,3d render|render,mosaic,sculpture|statue',
  look: 'realistic|photorealistic,cartoonish|cartoony,vintage|retro,minimalist,abstract,surreal',
  fill: 'empty,full',
  state: 'open,closed',
  clean: 'clean,dirty',
};

// ---- spatial ----
const SPATIAL_GROUPS: Record<string, string> = {
  side: 'left,right',
  vertical: 'above|over|on top of,below|under|beneath|underneath',
  depth: 'in front of,behind',
  containment: 'inside|within,outside',
  distance: 'near|next to|beside|close to,far from|far away from',
  end: 'top,bottom',
  direction: 'up,down',
  headings: 'upward|upwards,downward|downwards',
  toward: 'toward|towards,away from',
  pose: 'sitting|seated,standing,lying|lying down,kneeling',
  pose3: 'sits,stands,lies',
  motion: 'running,walking,jumping,climbing',
  orientation: 'horizontal,vertical',
  facing: 'facing the camera,facing away from the camera',
};

// ---- context ----
const CONTEXT_GROUPS: Record<string, string> = {
  time: 'day|daytime|daylight,night|nighttime|midnight,sunrise|dawn,sunset|dusk|twilight,morning,afternoon|midday|noon,evening',
  weather: 'sunny|clear,rainy,snowy,foggy|misty|hazy,cloudy|overcast,stormy,windy',
  weatherNoun: 'rain,snow,fog|mist,sunshine,storm|thunderstorm',
  season: 'summer,winter,autumn,spring',
  outdoors: 'beach|seaside|shore,forest|woods,jungle,desert,city|town|downtown,mountains,park,field|meadow,countryside|farm,lake,river,ocean|sea,street|road,garden',
  room: 'kitchen,bedroom,living room,office,bathroom,classroom,library',
  inout: 'indoors|indoor,outdoors|outdoor',
  light: 'bright|brightly lit|well-lit,dark|dim|dimly lit,sunlit,moonlit,candlelit|candle-lit,neon-lit',
  place: 'mars,the moon',
  background: 'studio,outer space|space',
};

/** "on": too often not spatial ("on a sunny day", "on mars", "trending on artstation"), hence weak. */
const SPATIAL_WEAK: Record<string, string> = {
  support: 'on,under,next to|beside,in front of',
};

function groups(principle: Principle, spec: Record<string, string>, weak = false): SwapGroup[] {
  return Object.entries(spec).map(([name, s]) => ({ name, principle, classes: cls(s), ...(weak ? { weak } : {}) }));
}

const nounGroups = groups('content', NOUN_GROUPS);
const pluralNounGroups: SwapGroup[] = nounGroups.map((g) => ({ ...g, name: `${g.name} (plural)`, classes: g.classes.map((c) => c.map(pluralize)) }));

/** Every word list of the rule editor, by principle (exported so the app can show or extend them). */
export const SWAP_GROUPS: Record<Principle, SwapGroup[]> = {
  content: [...nounGroups, ...pluralNounGroups, { name: 'count', principle: 'content', classes: cls(NUMBER_WORDS) }],
  attribute: groups('attribute', ATTRIBUTE_GROUPS),
  spatial: [...groups('spatial', SPATIAL_GROUPS), ...groups('spatial', SPATIAL_WEAK, true)],
  context: groups('context', CONTEXT_GROUPS),
};

const SINGULAR_NOUNS = new Set(nounGroups.flatMap((g) => g.classes.flat()));
const ALL_NOUNS = new Set([...SINGULAR_NOUNS, ...pluralNounGroups.flatMap((g) => g.classes.flat())]);
const COLOURS = SWAP_GROUPS.attribute.find((g) => g.name === 'colour')!.classes;

/** Appended by the context editor when a caption names no setting, weather or time at all. */
export const CONTEXT_PHRASES = ['at night', 'in the rain', 'on a snowy day', 'at sunset', 'in thick fog', 'in a desert'];

/** One place a rule can change, and what it may become. */
interface Site {
  start: number;
  end: number;
  principle: Principle;
  /** Replacement texts for [start, end). */
  options: string[];
  kind: 'swap' | 'count' | 'insert' | 'append';
  weak?: boolean;
}

/** After a weak "on", words that show it is not a spatial relation between objects. */
const NOT_SPATIAL_AFTER_ON = /^\s+(?:(?:a|an|the)\s+)?(?:[\p{L}-]+\s+)?(?:day|night|morning|afternoon|evening|weekend|holiday|monday|tuesday|wednesday|thursday|friday|saturday|sunday|mars|moon|earth|artstation|pixiv|deviantart|behance|instagram|display|fire|sale|tv|screen|film|canvas|paper|vacation|stage|background|backdrop)(?![\p{L}])/iu;

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const bounded = (alternatives: string[]) =>
  new RegExp(`(?<![\\p{L}\\p{N}'’-])(?:${alternatives.map(escapeRe).join('|')})(?![\\p{L}\\p{N}-])`, 'giu');

interface CompiledGroup {
  group: SwapGroup;
  re: RegExp;
  classOf: Map<string, number>;
}

const compiled: Record<Principle, CompiledGroup[]> = Object.fromEntries(
  PRINCIPLES.map((p) => [
    p,
    SWAP_GROUPS[p].map((group) => {
      const classOf = new Map<string, number>();
      group.classes.forEach((c, i) => c.forEach((w) => classOf.set(w.toLowerCase(), i)));
      // Longest first, so "on top of" wins over "on" and "lying down" over "lying".
      const words = [...classOf.keys()].sort((a, b) => b.length - a.length);
      return { group, re: bounded(words), classOf };
    }),
  ]),
) as Record<Principle, CompiledGroup[]>;

/** A colour right before "background" ("on a white background") is the scene's, not an object's. */
const BACKGROUND_AFTER = /^\s+(?:background|backdrop)(?![\p{L}])/iu;

function swapSites(caption: string, principle: Principle): Site[] {
  const sites: Site[] = [];
  for (const { group, re, classOf } of compiled[principle]) {
    re.lastIndex = 0;
    for (const m of caption.matchAll(re)) {
      const k = classOf.get(m[0].toLowerCase());
      if (k === undefined) continue;
      const end = m.index! + m[0].length;
      if (group.weak && NOT_SPATIAL_AFTER_ON.test(caption.slice(end))) continue;
      if (principle === 'attribute' && group.name === 'colour' && BACKGROUND_AFTER.test(caption.slice(end))) continue;
      // Each other class, written with its first (most common) word.
      const options = group.classes.filter((_, i) => i !== k).map((c) => c[0]);
      sites.push({ start: m.index!, end, principle, options, kind: 'swap', ...(group.weak ? { weak: true } : {}) });
    }
  }
  // Weak matches count only when nothing else matched.
  const strong = sites.filter((s) => !s.weak);
  return strong.length ? strong : sites;
}

/** Context: the background's colour ("on a white background" -> "on a blue background"), from the colour list. */
function backgroundSites(caption: string): Site[] {
  const { group, re, classOf } = compiled.attribute.find((g) => g.group.name === 'colour')!;
  const sites: Site[] = [];
  for (const m of caption.matchAll(re)) {
    const end = m.index! + m[0].length;
    if (!BACKGROUND_AFTER.test(caption.slice(end))) continue;
    const k = classOf.get(m[0].toLowerCase());
    sites.push({ start: m.index!, end, principle: 'context', options: group.classes.filter((_, i) => i !== k).map((c) => c[0]), kind: 'swap' });
  }
  return sites;
}

/** Counts: "a cat" -> "two cats", "3 apples" -> "5 apples". */
function countSites(caption: string): Site[] {
  const sites: Site[] = [];
  const articleNoun = /(?<![\p{L}\p{N}])(a|an|one)\s+([\p{L}]+)(?![\p{L}\p{N}-])/giu;
  for (const m of caption.matchAll(articleNoun)) {
    const noun = m[2].toLowerCase();
    if (!SINGULAR_NOUNS.has(noun) || pluralize(noun) === noun) continue;
    const plural = pluralize(noun);
    sites.push({ start: m.index!, end: m.index! + m[0].length, principle: 'content', options: ['two', 'three', 'four'].map((n) => `${n} ${plural}`), kind: 'count' });
  }
  const digits = /(?<![\p{L}\p{N}.,])(\d{1,3})(?![\p{L}\p{N}]|[.,]\d)(?=\s+\p{L})/gu;
  for (const m of caption.matchAll(digits)) {
    const n = Number(m[1]);
    const options = [n + 1, n + 2, n + 3, n - 1, n - 2].filter((x) => x >= 2 && x !== n).map(String);
    sites.push({ start: m.index!, end: m.index! + m[0].length, principle: 'content', options, kind: 'count' });
  }
  return sites;
}

/** Where a colour can be put before a known object that has none: "a cat" -> "a red cat". */
function colourInsertSites(caption: string): Site[] {
  const sites: Site[] = [];
  const colourWords = new Set(COLOURS.flat());
  const re = /(?<![\p{L}\p{N}])([\p{L}]+)(?![\p{L}\p{N}-])/gu;
  let prev = '';
  for (const m of caption.matchAll(re)) {
    const w = m[1].toLowerCase();
    if (ALL_NOUNS.has(w) && !colourWords.has(prev)) {
      sites.push({ start: m.index!, end: m.index!, principle: 'attribute', options: COLOURS.map((c) => `${c[0]} `), kind: 'insert' });
    }
    prev = w;
  }
  return sites;
}

function contextAppendSite(caption: string): Site {
  const trimmed = caption.replace(/[\s.!]+$/u, '');
  return { start: trimmed.length, end: caption.length, principle: 'context', options: CONTEXT_PHRASES.map((p) => `, ${p}`), kind: 'append' };
}

/** Drops sites that overlap an earlier, longer one. */
function dropOverlaps(sites: Site[]): Site[] {
  const sorted = [...sites].sort((a, b) => b.end - b.start - (a.end - a.start) || a.start - b.start);
  const kept: Site[] = [];
  for (const s of sorted) {
    const clash = kept.some((k) => (s.start < k.end && k.start < s.end) || (s.start === s.end && s.start > k.start && s.start < k.end));
    if (!clash) kept.push(s);
  }
  return kept.sort((a, b) => a.start - b.start || a.end - b.end);
}

/** The places where `principle` can edit the caption, primary edits first; fallbacks only when none. */
export function editSites(caption: string, principle: Principle): Site[] {
  let sites: Site[];
  // A count site ("a cat" -> "two cats") may overlap a noun swap ("cat" -> "dog"): both stay as choices.
  if (principle === 'content') sites = [...countSites(caption), ...dropOverlaps(swapSites(caption, 'content'))];
  else if (principle === 'context') sites = dropOverlaps([...swapSites(caption, 'context'), ...backgroundSites(caption)]);
  else sites = dropOverlaps(swapSites(caption, principle));
  if (sites.length) return sites;
  if (principle === 'attribute') return colourInsertSites(caption);
  if (principle === 'context' && caption.trim() !== '') return [contextAppendSite(caption)];
  return [];
}

function matchCase(replacement: string, original: string): string {
  if (original.length > 1 && original === original.toUpperCase() && original !== original.toLowerCase()) return replacement.toUpperCase();
  if (original[0] && original[0] !== original[0].toLowerCase()) return replacement[0].toUpperCase() + replacement.slice(1);
  return replacement;
}

/** "a" or "an" before a word, by its first sound (good enough for the word lists here). */
function articleFor(word: string): 'a' | 'an' {
  const w = word.toLowerCase();
  if (/^(?:one|uni|use|eu|euro)/.test(w)) return 'a';
  if (/^(?:hour|honest|honou?r)/.test(w)) return 'an';
  return /^[aeiou]/.test(w) ? 'an' : 'a';
}

function applySite(caption: string, site: Site, replacement: string): string {
  const original = caption.slice(site.start, site.end);
  const text = site.kind === 'swap' || site.kind === 'count' ? matchCase(replacement, original) : replacement;
  let before = caption.slice(0, site.start);
  const after = caption.slice(site.end);
  // Keep "a"/"an" right before the changed word agreeing with it.
  const art = /(?<![\p{L}\p{N}])(a|an|A|An|AN)(\s+)$/u.exec(before);
  if (art && site.kind !== 'count' && site.kind !== 'append') {
    const want = articleFor(text);
    const got = art[1].toLowerCase();
    if (want !== got) {
      const fixed = art[1] === art[1].toUpperCase() && art[1].length > 1 ? want.toUpperCase() : art[1][0] === 'A' ? want[0].toUpperCase() + want.slice(1) : want;
      before = before.slice(0, art.index) + fixed + art[2];
    }
  }
  return before + text + after;
}

/** Sites whose replacements are kept to `words` (when given): a site left with none is dropped. */
function sitesWithin(caption: string, principle: Principle, words?: ReadonlySet<string>): Site[] {
  const sites = editSites(caption, principle);
  if (!words) return sites;
  const writable = (text: string) => (text.toLowerCase().match(/[\p{L}\p{N}'-]+/gu) ?? []).every((w) => words.has(w));
  return sites.map((s) => ({ ...s, options: s.options.filter(writable) })).filter((s) => s.options.length > 0);
}

/**
 * One rule edit of `caption` by `principle` ('mix' picks a principle that applies), or null if none applies.
 * With `words`, an edit writes only words of that set.
 */
export function ruleEdit(caption: string, principle: PrincipleChoice, rand: () => number, words?: ReadonlySet<string>): { caption: string; principle: Principle } | null {
  let p: Principle;
  let sites: Site[];
  if (principle === 'mix') {
    const applicable = PRINCIPLES.map((q) => ({ q, s: sitesWithin(caption, q, words) })).filter((x) => x.s.length > 0 && (x.s[0].kind === 'swap' || x.s[0].kind === 'count'));
    const chosen = applicable.length ? pick(rand, applicable) : { q: 'context' as Principle, s: sitesWithin(caption, 'context', words) };
    p = chosen.q;
    sites = chosen.s;
  } else {
    p = principle;
    sites = sitesWithin(caption, principle, words);
  }
  if (sites.length === 0) return null;
  const site = pick(rand, sites);
  return { caption: applySite(caption, site, pick(rand, site.options)), principle: p };
}

export interface RuleEditorOptions {
  /** Seed of every edit (default 0). */
  seed?: number | string;
  /** Validation's token counter (ClipTokenizer.countTokens). */
  countTokens?: ValidationOptions['countTokens'];
  tokenBudget?: number;
  /** Draws tried before giving up on a caption (default 24). */
  maxTries?: number;
  /**
   * The only words an edit may write, lower case (default: any). A small model's whole vocabulary, such as
   * the demo's shapes world, where "sphere" would be a word its text encoder never learnt.
   */
  words?: ReadonlySet<string>;
}

/** The offline editor: the default when no LLM endpoint is set. */
export class RuleCaptionEditor implements CaptionEditor {
  readonly source = 'rule' as const;
  constructor(private readonly options: RuleEditorOptions = {}) {}

  async edit(request: EditRequest): Promise<EditResult> {
    return this.editSync(request);
  }

  editSync(request: EditRequest): EditResult {
    const { caption, principle, avoid = [], index = 0 } = request;
    const tries = this.options.maxTries ?? 24;
    let lastReason = `no ${principle === 'mix' ? '' : `${principle} `}word the rule editor knows in this caption`;
    for (let attempt = 0; attempt < tries; attempt++) {
      const rand = seededRandom(this.options.seed ?? 0, caption, principle, index, attempt);
      const edit = ruleEdit(caption, principle, rand, this.options.words);
      if (!edit) break;
      const verdict = validateNegative(caption, edit.caption, {
        principle: edit.principle,
        avoid,
        countTokens: this.options.countTokens,
        tokenBudget: this.options.tokenBudget,
      });
      if (verdict.ok) return { ok: true, caption: verdict.caption, principle: edit.principle, source: 'rule', attempts: attempt + 1 };
      lastReason = verdict.code === 'duplicate' ? 'every rule edit repeats an earlier negative' : verdict.reason;
    }
    return { ok: false, reason: lastReason, principle, source: 'rule', attempts: tries };
  }
}
