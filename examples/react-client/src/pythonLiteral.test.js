import { describe, expect, it } from 'vitest';
import { describeException, parsePythonLiteral, resultValue } from './pythonLiteral.js';
import { describeResult } from './taskKinds.js';

describe('parsePythonLiteral', () => {
  it('reads the reprs Celery puts in task-succeeded events', () => {
    expect(parsePythonLiteral("{'label': 'setosa', 'probabilities': {'setosa': 0.97, 'versicolor': 0.03, 'virginica': 1e-05}}"))
      .toEqual({ label: 'setosa', probabilities: { setosa: 0.97, versicolor: 0.03, virginica: 1e-5 } });
    expect(parsePythonLiteral("{'ok': True, 'none': None, 'list': [1, -2.5, (3, 4)], \"q\": \"it's\"}"))
      .toEqual({ ok: true, none: null, list: [1, -2.5, [3, 4]], q: "it's" });
    expect(parsePythonLiteral("'tab\\there \\u00e9'")).toBe('tab\there é');
    expect(parsePythonLiteral('42')).toBe(42);
  });

  it('returns undefined for anything else', () => {
    expect(parsePythonLiteral('<object at 0x7f>')).toBeUndefined();
    expect(parsePythonLiteral("{'a': 1")).toBeUndefined();
    expect(parsePythonLiteral('datetime.datetime(2024, 1, 1)')).toBeUndefined();
    expect(parsePythonLiteral(null)).toBeUndefined();
  });

  it('leaves JSON results alone', () => {
    expect(resultValue({ a: 1 })).toEqual({ a: 1 });
    expect(resultValue('plain text')).toBe('plain text');
  });
});

describe('describeException', () => {
  it('splits a repr into type and message', () => {
    expect(describeException("RuntimeError('Disk quota exceeded')")).toEqual({ type: 'RuntimeError', message: 'Disk quota exceeded' });
    expect(describeException('ValueError("bad \'value\'")')).toEqual({ type: 'ValueError', message: "bad 'value'" });
    expect(describeException('something odd')).toEqual({ type: null, message: 'something odd' });
    expect(describeException(null)).toBeNull();
  });
});

describe('describeResult', () => {
  it('summarises each kind of result, from a repr or from JSON', () => {
    expect(describeResult('resize-image', "{'path': '/m/abc.jpg', 'width': 640, 'height': 400, 'bytes': 53350}"))
      .toEqual({ headline: 'Image resized to 640 × 400 px', details: [['File', 'abc.jpg'], ['Size', '52.1 KB']] });
    expect(describeResult('predict', { label: 'setosa', probabilities: { setosa: 0.9, virginica: 0.1 } }).headline)
      .toBe('Iris setosa (90.0% confidence)');
    expect(describeResult('webhooks', { group_id: 'g', task_ids: ['a', 'b'] }).headline).toBe('Dispatched 2 webhook deliveries');
    expect(describeResult('demo-progress', '3').headline).toBe('Completed 3 steps');
    expect(describeResult('predict', '<unparseable>')).toEqual({ raw: '<unparseable>' });
    expect(describeResult('predict', null)).toBeNull();
  });
});
