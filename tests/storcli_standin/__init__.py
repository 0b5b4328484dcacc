"""The storcli stand-in: a fake tool directory that replays ../shared/corpus/storcli."""
