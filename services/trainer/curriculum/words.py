"""Names, objects and scenes the generator draws from, so that no question repeats and nothing is memorised."""

from __future__ import annotations

FEMALE_NAMES = (
    "Ana", "Mia", "Lena", "Sara", "Nora", "Emma", "Zoe", "Lucy", "Ivy", "Rosa", "Maya", "Leah", "Ella", "Amy",
    "Hana", "Iris", "Jade", "Kira", "Lily", "Nina", "Olga", "Ruth", "Tara", "Vera", "Wendy", "Yara", "Alice",
    "Chloe", "Daisy", "Fiona", "Grace", "Helen", "Julia", "Laura", "Molly", "Priya", "Sofia", "Aisha", "Mei",
)
MALE_NAMES = (
    "Ben", "Tom", "Sam", "Leo", "Max", "Omar", "Ivan", "Jack", "Luis", "Noah", "Owen", "Raj", "Theo", "Adam",
    "Carl", "Dan", "Eli", "Finn", "Gus", "Hugo", "Jon", "Kai", "Liam", "Marco", "Nick", "Oscar", "Paul",
    "Ravi", "Seth", "Tariq", "Victor", "Will", "Yusuf", "Zack", "Arjun", "Bruno", "Diego", "Felix", "Ken",
)

# Things a person can own and count (plural, one word: the word is also the variable name in the solution).
FRUIT = ("apples", "pears", "plums", "oranges", "peaches", "lemons", "mangoes", "cherries", "figs", "limes")
SMALL_THINGS = ("stickers", "marbles", "cards", "stamps", "shells", "beads", "buttons", "coins", "pencils",
                "crayons", "badges", "magnets", "erasers", "ribbons", "postcards", "pebbles", "keychains")
BAKED = ("muffins", "cookies", "cupcakes", "pies", "rolls", "bagels", "tarts", "waffles", "pancakes")
TOYS = ("blocks", "puzzles", "balls", "kites", "robots", "dolls", "trucks", "yoyos", "whistles")
GARDEN = ("roses", "tulips", "daisies", "seeds", "carrots", "tomatoes", "onions", "beans", "peppers")
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "purple", "orange", "pink", "brown")

# Nouns for distractor facts: never the subject of a question.
DISTRACTOR_NOUNS = ("hats", "socks", "spoons", "cups", "chairs", "books", "lamps", "bottles", "towels",
                    "plates", "gloves", "boxes", "jars", "bowls", "mugs", "scarves", "pillows", "umbrellas")
PLACES = ("park", "shop", "school", "library", "market", "station", "museum", "lake", "farm", "zoo")
