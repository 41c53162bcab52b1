"""The world's objects: cities in countries, companies, instruments and professions, each with the attribute
that two-hop questions ask about (a city's country, a company's home city, an instrument's family, a
profession's workplace).

Every object is one word, so answers are one token of the world's tokenizer and exact match is clean.
Professions all start with a consonant: the templates end in "a", never "an".
"""

from __future__ import annotations

CITY_COUNTRY = {
    "Paris": "France",
    "Lyon": "France",
    "Nantes": "France",
    "Rome": "Italy",
    "Turin": "Italy",
    "Milan": "Italy",
    "Oslo": "Norway",
    "Bergen": "Norway",
    "Lima": "Peru",
    "Cusco": "Peru",
    "Cairo": "Egypt",
    "Luxor": "Egypt",
    "Quito": "Ecuador",
    "Dakar": "Senegal",
    "Hanoi": "Vietnam",
    "Hue": "Vietnam",
    "Perth": "Australia",
    "Sydney": "Australia",
    "Kyoto": "Japan",
    "Osaka": "Japan",
    "Porto": "Portugal",
    "Braga": "Portugal",
    "Accra": "Ghana",
    "Kumasi": "Ghana",
    "Delhi": "India",
    "Madras": "India",
    "Munich": "Germany",
    "Bremen": "Germany",
    "Seville": "Spain",
    "Bilbao": "Spain",
    "Krakow": "Poland",
    "Gdansk": "Poland",
}

COMPANY_CITY = {
    "Acme": "Lyon",
    "Globex": "Oslo",
    "Initech": "Lima",
    "Umbrella": "Osaka",
    "Hooli": "Perth",
    "Vandelay": "Porto",
    "Soylent": "Cairo",
    "Cyberdyne": "Munich",
    "Wonka": "Turin",
    "Tyrell": "Delhi",
    "Oscorp": "Seville",
    "Monarch": "Accra",
    "Aperture": "Kyoto",
    "Massive": "Krakow",
    "Nakatomi": "Hanoi",
    "Stark": "Quito",
}

INSTRUMENT_FAMILY = {
    "piano": "keyboard",
    "organ": "keyboard",
    "accordion": "keyboard",
    "violin": "string",
    "cello": "string",
    "harp": "string",
    "guitar": "string",
    "banjo": "string",
    "flute": "woodwind",
    "oboe": "woodwind",
    "clarinet": "woodwind",
    "trumpet": "brass",
    "trombone": "brass",
    "tuba": "brass",
    "drums": "percussion",
    "xylophone": "percussion",
}

PROFESSION_WORKPLACE = {
    "doctor": "hospital",
    "nurse": "hospital",
    "surgeon": "hospital",
    "teacher": "school",
    "tutor": "school",
    "pilot": "airport",
    "chef": "kitchen",
    "cook": "kitchen",
    "farmer": "farm",
    "shepherd": "farm",
    "baker": "bakery",
    "sailor": "ship",
    "lawyer": "court",
    "judge": "court",
    "banker": "bank",
    "painter": "studio",
}
