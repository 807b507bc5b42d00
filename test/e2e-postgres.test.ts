import { describe } from 'vitest';
import { e2eStory } from './e2e-story.js';

describe('end to end on PostgreSQL', () => e2eStory('postgres'));
